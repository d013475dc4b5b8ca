-- hunt: ssrf
-- owasp: API7:2023 Server Side Request Forgery
-- scenarios: ssrf
-- entity: actor
-- title: URLs pointing inside, passed as parameters
--
-- Endpoints that fetch a URL for the client (image proxy, webhooks, imports) are asked to
-- fetch the cloud metadata service, loopback, private networks or non-HTTP schemes.
-- Matching the query string and the body for those targets, raw or percent-encoded,
-- finds the attempts; `waf_blocked` tells how many the WAF stopped.
SELECT
    coalesce(client_id, source_ip) AS actor,
    count(*) AS attempts,
    sum(CASE WHEN waf_action = 'block' THEN 1 ELSE 0 END) AS waf_blocked,
    min(timestamp) AS first_seen,
    max(url_path) AS sample_path
FROM events
WHERE regexp_like(
      lower(coalesce(url_query, '') || ' ' || coalesce(http_request_body_content, '')),
      '(169\.254\.169\.254|metadata\.google|localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\]|10\.[0-9]+\.|192\.168\.|file:|gopher:|dict:|%2f%2f169|%3a%2f%2f127|%3a%2f%2flocalhost)')
GROUP BY coalesce(client_id, source_ip)
ORDER BY attempts DESC, actor
