-- hunt: credential_stuffing
-- owasp: API2:2023 Broken Authentication
-- scenarios: credential_stuffing, credential_stuffing_slow, brute_force
-- entity: hour
-- title: Hours with a surge of failed logins from many addresses
--
-- Credential stuffing replays leaked username/password pairs through rotating proxies:
-- every attempt comes from a fresh address with a browser user agent, so no single
-- address stands out. What stands out is the login endpoint itself: many failures in the
-- hour, from many distinct addresses, and a failure share far above the few typos of
-- real customers. `failure_share` near 1 with hundreds of `distinct_ips` is a stuffing
-- run; few addresses and one account is brute force (see the next hunt).
-- Pivot: the failed logins of that hour, grouped by user agent or /24 network.
SELECT
    date_trunc('hour', timestamp) AS hour_start,
    count(*) AS login_attempts,
    sum(CASE WHEN http_response_status_code IN (401, 429) THEN 1 ELSE 0 END) AS failed,
    count(DISTINCT source_ip) AS distinct_ips,
    round(CAST(sum(CASE WHEN http_response_status_code IN (401, 429) THEN 1 ELSE 0 END) AS DOUBLE)
          / count(*), 3) AS failure_share
FROM events
WHERE url_path LIKE '%/auth/login'
GROUP BY date_trunc('hour', timestamp)
HAVING sum(CASE WHEN http_response_status_code IN (401, 429) THEN 1 ELSE 0 END) >= 100
   AND CAST(sum(CASE WHEN http_response_status_code IN (401, 429) THEN 1 ELSE 0 END) AS DOUBLE)
       / count(*) >= 0.5
ORDER BY hour_start
