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
-- Counted per address, hour and flow first, then per address and hour: the same result
-- as `count(DISTINCT url_path)`, which is much slower grouped by address and hour.
WITH flow AS (
    SELECT
        source_ip AS actor,
        date_trunc('hour', timestamp) AS hour_start,
        url_path,
        count(*) AS requests,
        sum(CASE WHEN http_response_status_code >= 400 THEN 1 ELSE 0 END) AS refused,
        min(timestamp) AS first_ts,
        max(timestamp) AS last_ts
    FROM events
    WHERE url_path LIKE '%/auth/signup'
       OR url_path LIKE '%/checkout'
       OR url_path LIKE '%/cart/coupon'
    GROUP BY 1, 2, 3
)
SELECT
    actor,
    hour_start,
    sum(requests) AS flow_requests,
    count(url_path) AS flows,
    sum(refused) AS refused,
    round(60 * CAST(sum(requests) AS DOUBLE)
          / greatest(extract(epoch FROM max(last_ts)) - extract(epoch FROM min(first_ts)), 1), 2) AS per_minute
FROM flow
GROUP BY actor, hour_start
HAVING sum(requests) >= 40
ORDER BY flow_requests DESC, actor, hour_start
