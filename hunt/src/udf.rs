//! Hunting functions registered in every SQL session.
//!
//! | function | returns | meaning |
//! |---|---|---|
//! | `ip_in_cidr(ip, cidr)` | boolean | whether the address lies in the network (`'10.0.0.0/8'`, `'2001:db8::/32'`); null when either does not parse |
//! | `ip_network(ip, prefix_len)` | text | the network of the address with that prefix length, as CIDR text (`ip_network('10.1.2.3', 24)` = `'10.1.2.0/24'`); null when the address does not parse or the prefix is out of range |
//! | `endpoint_template(path)` | text | the endpoint template of a path (`/api/v1/users/123` → `/api/v1/users/{id}`), by the feature stage's rules ([`gatewatch_features::template::template_path`]) |
//!
//! All three are pure and null-in/null-out, so the optimizer can fold them over constants.

use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanBuilder, StringArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::{Result as DfResult, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Every hunting function, ready to register.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(HuntFn::new(Kind::IpInCidr)),
        ScalarUDF::new_from_impl(HuntFn::new(Kind::IpNetwork)),
        ScalarUDF::new_from_impl(HuntFn::new(Kind::EndpointTemplate)),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    IpInCidr,
    IpNetwork,
    EndpointTemplate,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct HuntFn {
    kind: Kind,
    signature: Signature,
}

impl HuntFn {
    fn new(kind: Kind) -> Self {
        HuntFn {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
    fn arity(&self) -> usize {
        match self.kind {
            Kind::IpInCidr | Kind::IpNetwork => 2,
            Kind::EndpointTemplate => 1,
        }
    }
}

fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

fn is_int(t: &DataType) -> bool {
    t.is_integer() || *t == DataType::Null
}

impl ScalarUDFImpl for HuntFn {
    fn name(&self) -> &str {
        match self.kind {
            Kind::IpInCidr => "ip_in_cidr",
            Kind::IpNetwork => "ip_network",
            Kind::EndpointTemplate => "endpoint_template",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        let name = self.name();
        if arg_types.len() != self.arity() {
            return plan_err!(
                "{name} takes {} arguments, got {}",
                self.arity(),
                arg_types.len()
            );
        }
        let mut out = Vec::new();
        for (i, t) in arg_types.iter().enumerate() {
            let want_int = self.kind == Kind::IpNetwork && i == 1;
            if want_int {
                if !is_int(t) {
                    return plan_err!(
                        "{name}: argument {} must be an integer prefix length, got {t}",
                        i + 1
                    );
                }
                out.push(DataType::Int64);
            } else {
                if !is_text(t) {
                    return plan_err!("{name}: argument {} must be text, got {t}", i + 1);
                }
                out.push(DataType::Utf8);
            }
        }
        Ok(out)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(match self.kind {
            Kind::IpInCidr => DataType::Boolean,
            Kind::IpNetwork | Kind::EndpointTemplate => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(if all_scalar { 1 } else { n }))
            .collect::<DfResult<_>>()?;
        let out: ArrayRef = match self.kind {
            Kind::IpInCidr => {
                let ip = text(&arrays[0])?;
                let net = text(&arrays[1])?;
                let mut b = BooleanBuilder::with_capacity(ip.len());
                // The network is usually one constant: parse it once.
                let mut last: Option<(String, Option<(IpAddr, u8)>)> = None;
                for i in 0..ip.len() {
                    if ip.is_null(i) || net.is_null(i) {
                        b.append_null();
                        continue;
                    }
                    let cidr = net.value(i);
                    let parsed = match &last {
                        Some((s, p)) if s == cidr => *p,
                        _ => {
                            let p = parse_cidr(cidr);
                            last = Some((cidr.to_owned(), p));
                            p
                        }
                    };
                    match (ip.value(i).trim().parse::<IpAddr>(), parsed) {
                        (Ok(addr), Some((base, len))) => {
                            b.append_option(in_network(addr, base, len))
                        }
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            Kind::IpNetwork => {
                let ip = text(&arrays[0])?;
                let len = cast(&arrays[1], &DataType::Int64)?;
                let len = len
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .ok_or_else(|| {
                        datafusion::error::DataFusionError::Execution(
                            "ip_network: prefix is not an integer".into(),
                        )
                    })?;
                let mut b = StringBuilder::with_capacity(ip.len(), ip.len() * 16);
                for i in 0..ip.len() {
                    if ip.is_null(i) || len.is_null(i) {
                        b.append_null();
                        continue;
                    }
                    b.append_option(network_of(ip.value(i), len.value(i)));
                }
                Arc::new(b.finish())
            }
            Kind::EndpointTemplate => {
                let path = text(&arrays[0])?;
                let mut b = StringBuilder::with_capacity(path.len(), path.len() * 24);
                for i in 0..path.len() {
                    if path.is_null(i) {
                        b.append_null();
                    } else {
                        b.append_value(gatewatch_features::template::template_path(path.value(i)));
                    }
                }
                Arc::new(b.finish())
            }
        };
        if all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

fn text(a: &ArrayRef) -> DfResult<StringArray> {
    let c = cast(a, &DataType::Utf8)?;
    match c.as_any().downcast_ref::<StringArray>() {
        Some(s) => Ok(s.clone()),
        None => exec_err!("expected text, got {}", a.data_type()),
    }
}

/// `addr/len`; a bare address is a host network (/32 or /128).
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let s = s.trim();
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?),
        None => {
            let a = s.parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

fn mask_bits(addr: IpAddr) -> (u128, u32) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn prefix(bits: u128, width: u32, len: u32) -> u128 {
    if len == 0 { 0 } else { bits >> (width - len) }
}

/// Whether `addr` is in `base/len`; `None` when the families differ (an IPv4 address is
/// never in an IPv6 network and vice versa, except IPv4-mapped IPv6 addresses, which are
/// compared as IPv4).
fn in_network(addr: IpAddr, base: IpAddr, len: u8) -> Option<bool> {
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    };
    if addr.is_ipv4() != base.is_ipv4() {
        return Some(false);
    }
    let (a, w) = mask_bits(addr);
    let (b, _) = mask_bits(base);
    let len = u32::from(len);
    Some(prefix(a, w, len) == prefix(b, w, len))
}

fn network_of(ip: &str, len: i64) -> Option<String> {
    let addr = ip.trim().parse::<IpAddr>().ok()?;
    let (bits, width) = mask_bits(addr);
    let len = u32::try_from(len).ok().filter(|l| *l <= width)?;
    let net = if len == 0 {
        0
    } else {
        (bits >> (width - len)) << (width - len)
    };
    let net = match addr {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(u32::try_from(net).ok()?)),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(net)),
    };
    Some(format!("{net}/{len}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_membership() {
        let (base, len) = parse_cidr("10.0.0.0/8").unwrap();
        assert_eq!(
            in_network("10.200.1.1".parse().unwrap(), base, len),
            Some(true)
        );
        assert_eq!(
            in_network("11.0.0.1".parse().unwrap(), base, len),
            Some(false)
        );
        assert_eq!(
            in_network("::ffff:10.1.1.1".parse().unwrap(), base, len),
            Some(true)
        );
        let (b6, l6) = parse_cidr("2001:db8::/32").unwrap();
        assert_eq!(
            in_network("2001:db8:1::5".parse().unwrap(), b6, l6),
            Some(true)
        );
        assert_eq!(in_network("10.1.1.1".parse().unwrap(), b6, l6), Some(false));
        let (b0, l0) = parse_cidr("0.0.0.0/0").unwrap();
        assert_eq!(in_network("1.2.3.4".parse().unwrap(), b0, l0), Some(true));
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
        assert_eq!(parse_cidr("nonsense"), None);
        assert_eq!(parse_cidr("1.2.3.4").map(|p| p.1), Some(32));
    }

    #[test]
    fn networks() {
        assert_eq!(network_of("10.1.2.3", 24).as_deref(), Some("10.1.2.0/24"));
        assert_eq!(network_of("10.1.2.3", 0).as_deref(), Some("0.0.0.0/0"));
        assert_eq!(network_of("10.1.2.3", 32).as_deref(), Some("10.1.2.3/32"));
        assert_eq!(network_of("10.1.2.3", 33), None);
        assert_eq!(network_of("10.1.2.3", -1), None);
        assert_eq!(
            network_of("2001:db8:aa::1", 48).as_deref(),
            Some("2001:db8:aa::/48")
        );
        assert_eq!(network_of("x", 8), None);
    }
}
