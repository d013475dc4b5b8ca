-- hunt: shadow_endpoints
-- owasp: API9:2023 Improper Inventory Management
-- scenarios: shadow_endpoints
-- entity: actor
-- title: Calls to undocumented, internal and retired endpoints
--
-- The published API is `/api/v1` and `/api/v2`. Requests to `/internal/…`, to the retired
-- `/api/v0` and `/api/beta`, to a stray `/graphql`, or to the deprecated `/api/v1/account`
-- reach endpoints nobody maintains. Who calls them, and whether they answered 200, is
-- the inventory problem in one table.
SELECT
    coalesce(client_id, source_ip) AS actor,
    count(*) AS requests,
    count(DISTINCT url_path) AS distinct_paths,
    sum(CASE WHEN http_response_status_code = 200 THEN 1 ELSE 0 END) AS answered,
    min(timestamp) AS first_seen
FROM events
WHERE url_path LIKE '/internal/%'
   OR url_path LIKE '/api/v0/%'
   OR url_path = '/api/v0'
   OR url_path LIKE '/api/beta/%'
   OR url_path = '/graphql'
GROUP BY coalesce(client_id, source_ip)
ORDER BY requests DESC, actor
