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
SELECT
    source_ip AS actor,
    count(*) AS failed_logins,
    sum(CASE WHEN http_response_status_code = 429 THEN 1 ELSE 0 END) AS rate_limited,
    count(DISTINCT user_agent_original) AS user_agents,
    min(timestamp) AS first_seen,
    max(timestamp) AS last_seen
FROM events
WHERE url_path LIKE '%/auth/login'
  AND http_response_status_code IN (401, 429)
GROUP BY source_ip
HAVING count(*) >= 10
ORDER BY failed_logins DESC, actor
