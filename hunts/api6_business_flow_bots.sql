-- hunt: business_flow_bots
-- owasp: API6:2023 Unrestricted Access to Sensitive Business Flows
-- scenarios: business_flow_abuse
-- entity: address
-- title: Addresses driving signup, checkout and coupons like a machine
--
-- People sign up once, check out a few times and try a coupon now and then. Bots buying
-- out a product, mass-creating accounts or cycling coupon codes hit the same flow dozens
-- of times an hour from a handful of addresses, and most of their attempts are refused
-- (codes that do not exist, sold-out checkouts, duplicate signups). Counting the
-- sensitive flows per address and hour, with the refused share and the pace, separates
-- them from even the busiest shared (carrier NAT) address of real customers.
WITH flow AS (
    SELECT
        source_ip AS actor,
        date_trunc('hour', timestamp) AS hour_start,
        timestamp,
        url_path,
        http_response_status_code AS status
    FROM events
    WHERE url_path LIKE '%/auth/signup'
       OR url_path LIKE '%/checkout'
       OR url_path LIKE '%/cart/coupon'
)
SELECT
    actor,
    hour_start,
    count(*) AS flow_requests,
    count(DISTINCT url_path) AS flows,
    sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS refused,
    round(60 * CAST(count(*) AS DOUBLE)
          / greatest(extract(epoch FROM max(timestamp)) - extract(epoch FROM min(timestamp)), 1), 2) AS per_minute
FROM flow
GROUP BY actor, hour_start
HAVING count(*) >= 40
ORDER BY flow_requests DESC, actor, hour_start
