-- hunt: function_level_authorization
-- owasp: API5:2023 Broken Function Level Authorization
-- scenarios: bfla
-- entity: actor
-- title: Ordinary identities probing administrative functions
--
-- Staff use `/admin` routes and get 200s; a regular account or an anonymous client that
-- tries them gets 401 or 403 – or, where a route forgot its check, a 200 that should not
-- have happened. Several refused admin calls from one identity are a probe.
SELECT
    coalesce(client_id, source_ip) AS actor,
    count(*) AS admin_requests,
    sum(CASE WHEN http_response_status_code IN (401, 403) THEN 1 ELSE 0 END) AS refused,
    count(DISTINCT url_path) AS distinct_paths,
    min(timestamp) AS first_seen
FROM events
WHERE url_path LIKE '%/admin/%' OR url_path LIKE '%/admin'
GROUP BY coalesce(client_id, source_ip)
HAVING sum(CASE WHEN http_response_status_code IN (401, 403) THEN 1 ELSE 0 END) >= 3
ORDER BY refused DESC, actor
