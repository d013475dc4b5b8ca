-- hunt: brute_force
-- owasp: API2:2023 Broken Authentication
-- scenarios: brute_force, credential_stuffing
-- entity: address
-- title: Addresses failing to log in again and again
--
-- Password guessing against one account comes from one to three addresses at a steady
-- pace, and the gateway's rate limit answers 429 after a while. A customer who forgot a
-- password fails a handful of times; an address with dozens of failed logins in a day is
-- guessing. Stuffing proxies that happen to be reused show up here too.
-- Counted per address and user agent first, then per address: the same result as
-- `count(DISTINCT user_agent_original)`, which is much slower grouped by address.
WITH per_agent AS (
    SELECT
        source_ip,
        user_agent_original,
        count(*) AS failed,
        sum(CASE WHEN http_response_status_code = 429 THEN 1 ELSE 0 END) AS rate_limited,
        min(timestamp) AS first_seen,
        max(timestamp) AS last_seen
    FROM events
    WHERE url_path LIKE '%/auth/login'
      AND http_response_status_code IN (401, 429)
    GROUP BY source_ip, user_agent_original
)
SELECT
    source_ip AS actor,
    sum(failed) AS failed_logins,
    sum(rate_limited) AS rate_limited,
    count(user_agent_original) AS user_agents,
    min(first_seen) AS first_seen,
    max(last_seen) AS last_seen
FROM per_agent
GROUP BY source_ip
HAVING sum(failed) >= 10
ORDER BY failed_logins DESC, actor
