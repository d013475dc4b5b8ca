-- hunt: function_level_authorization
-- owasp: API5:2023 Broken Function Level Authorization
-- scenarios: bfla
-- entity: actor
-- title: Ordinary identities probing administrative functions
--
-- Staff use `/admin` routes and get 200s; a regular account or an anonymous client that
-- tries them gets 401 or 403 – or, where a route forgot its check, a 200 that should not
-- have happened. Several refused admin calls from one identity are a probe.
-- Counted per identity and path first, then per identity: the same result as
-- `count(DISTINCT url_path)`, which is much slower grouped by identity.
WITH per_path AS (
    SELECT
        coalesce(client_id, source_ip) AS actor,
        url_path,
        count(*) AS requests,
        sum(CASE WHEN http_response_status_code IN (401, 403) THEN 1 ELSE 0 END) AS refused,
        min(timestamp) AS first_seen
    FROM events
    WHERE url_path LIKE '%/admin/%' OR url_path LIKE '%/admin'
    GROUP BY 1, 2
)
SELECT
    actor,
    sum(requests) AS admin_requests,
    sum(refused) AS refused,
    count(url_path) AS distinct_paths,
    min(first_seen) AS first_seen
FROM per_path
GROUP BY actor
HAVING sum(refused) >= 3
ORDER BY refused DESC, actor
