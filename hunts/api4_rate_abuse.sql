-- hunt: rate_abuse
-- owasp: API4:2023 Unrestricted Resource Consumption
-- scenarios: rate_abuse
-- entity: actor
-- title: Clients hammering the API, minute by minute
--
-- Scrapers and runaway integrations send tens of requests a second for minutes on end,
-- then get 429s. Counting each identity's busiest minute separates them from the
-- steady pace of people and scheduled jobs; `rate_limited` says whether the gateway
-- already pushed back. Internal services (`svc-…`) are left out.
WITH per_minute AS (
    SELECT
        coalesce(client_id, source_ip) AS actor,
        date_trunc('minute', timestamp) AS minute,
        count(*) AS requests,
        sum(CASE WHEN http_response_status_code = 429 THEN 1 ELSE 0 END) AS rate_limited
    FROM events
    WHERE client_id IS NULL OR client_id NOT LIKE 'svc-%'
    GROUP BY coalesce(client_id, source_ip), date_trunc('minute', timestamp)
)
SELECT
    actor,
    max(requests) AS peak_per_minute,
    sum(requests) AS requests_in_busy_minutes,
    sum(rate_limited) AS rate_limited,
    min(minute) AS first_busy_minute
FROM per_minute
WHERE requests >= 300
GROUP BY actor
ORDER BY peak_per_minute DESC, actor
