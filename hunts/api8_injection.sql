-- hunt: injection
-- owasp: API8:2023 Security Misconfiguration (injection)
-- scenarios: injection
-- entity: actor
-- title: SQL, script, path and command injection attempts
--
-- Payloads in the path, query or body: SQL keywords and quotes, script tags, `../`
-- traversal, shell metacharacters and `${jndi:` lookups, raw or percent-encoded. The WAF
-- rule ids say which ones it recognised; `not_blocked` are the attempts that reached the
-- API and deserve a look at the response codes.
SELECT
    coalesce(client_id, source_ip) AS actor,
    count(*) AS attempts,
    sum(CASE WHEN waf_action = 'block' THEN 0 ELSE 1 END) AS not_blocked,
    min(timestamp) AS first_seen,
    max(url_path) AS sample_path
FROM events
WHERE regexp_like(
      lower(url_path || ' ' || coalesce(url_query, '') || ' ' || coalesce(http_request_body_content, '')),
      '(union( |\+|%20)+select|'' or |%27( |\+|%20)*or|or( |\+|%20)+1=1|sleep\(|<script|%3cscript|onerror=|\.\./|%2e%2e|\$\{jndi:|%24%7bjndi|;( )*(cat|id|ls|wget|curl)|\|( )*(cat|id|ls)|`)')
GROUP BY coalesce(client_id, source_ip)
ORDER BY attempts DESC, actor
