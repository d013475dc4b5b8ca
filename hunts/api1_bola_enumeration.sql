-- hunt: bola_enumeration
-- owasp: API1:2023 Broken Object Level Authorization
-- scenarios: bola, bola_slow
-- entity: actor
-- title: One identity walking through many objects
--
-- Normal clients read their own profile and their own orders; an identity that touches
-- dozens of distinct order, user or invoice ids is enumerating other people's objects.
-- Internal services (`svc-…`) read everyone's objects by design and are left out.
-- `not_found_or_denied` high means the walk also hits ids that do not exist or that the
-- v2 API refuses: a sequential scan rather than a busy customer.
-- Pivot: `SELECT * FROM events WHERE coalesce(client_id, source_ip) = '<actor>' ORDER BY timestamp`.
-- Counted per identity and object first, then per identity: the same result as
-- `count(DISTINCT …)`, which is much slower grouped by identity.
WITH per_object AS (
    SELECT
        coalesce(client_id, source_ip) AS actor,
        CASE
            WHEN url_query LIKE 'file=invoice-%' THEN url_query
            ELSE split_part(url_path, '/', 5)
        END AS object,
        count(*) AS requests,
        sum(CASE WHEN http_response_status_code IN (403, 404) THEN 1 ELSE 0 END) AS not_found_or_denied,
        min(timestamp) AS first_seen,
        max(timestamp) AS last_seen
    FROM events
    -- `/api/v<one character>/orders/…` or `…/users/…` as one anchored regular expression:
    -- DataFusion runs each LIKE with a `_` wildcard as a regular expression of its own.
    WHERE (regexp_like(url_path, '(?s)^/api/v./(orders|users)/')
           OR url_query LIKE 'file=invoice-%')
      AND (client_id IS NULL OR client_id NOT LIKE 'svc-%')
    GROUP BY 1, 2
)
SELECT
    actor,
    sum(requests) AS requests,
    count(object) AS distinct_objects,
    sum(not_found_or_denied) AS not_found_or_denied,
    min(first_seen) AS first_seen,
    max(last_seen) AS last_seen
FROM per_object
GROUP BY actor
HAVING count(object) >= 25
ORDER BY distinct_objects DESC, actor
