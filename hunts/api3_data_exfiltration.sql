-- hunt: data_exfiltration
-- owasp: API3:2023 Broken Object Property Level Authorization
-- scenarios: excessive_data_exposure
-- entity: actor
-- title: Identities pulling far more data than anyone else
--
-- Bulk exports, `limit=10000` listings and `fields=*` expansions return megabytes where
-- a page of the shop returns kilobytes. Summing response bytes per identity and counting
-- the requests that ask for oversized pages finds the clients draining data. Partner
-- integrations and internal services move data in bulk by contract and are left out;
-- check `bulk_requests` before calling a heavy but ordinary customer an exfiltration.
-- The oversized-page markers are one regular expression (one pass over the query string
-- instead of four LIKEs); `.` in `per.page` matches any character, as `_` did in the LIKE.
SELECT
    coalesce(client_id, source_ip) AS actor,
    count(*) AS requests,
    sum(http_response_bytes) AS response_bytes,
    sum(CASE WHEN regexp_like(url_query, '(?s)limit=10000|per.page=5000|include=all|fields=\*') THEN 1 ELSE 0 END) AS bulk_requests,
    max(http_response_bytes) AS largest_response
FROM events
WHERE (client_id IS NULL OR (client_id NOT LIKE 'svc-%' AND client_id NOT LIKE 'partner-%'))
GROUP BY coalesce(client_id, source_ip)
HAVING sum(CASE WHEN regexp_like(url_query, '(?s)limit=10000|per.page=5000|include=all|fields=\*') THEN 1 ELSE 0 END) >= 3
   AND sum(http_response_bytes) >= 5000000
ORDER BY response_bytes DESC, actor
