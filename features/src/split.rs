//! Splitting text on one ASCII byte, for the per-event path and query walks.

/// The pieces of `s` between occurrences of the ASCII byte `sep`: the same pieces as
/// `s.split(sep as char)`. Path segments and query pairs are a few bytes long, and the
/// standard library's search for a `char` makes a `memchr` and then a `memcmp` call per
/// separator; a plain scan of the bytes costs less at these lengths. Splitting at an ASCII
/// byte always leaves whole UTF-8 characters on both sides.
#[inline]
pub(crate) fn split_ascii(s: &str, sep: u8) -> SplitAscii<'_> {
    debug_assert!(sep.is_ascii());
    SplitAscii { rest: Some(s), sep }
}

/// The iterator of [`split_ascii`].
pub(crate) struct SplitAscii<'a> {
    /// What is left to split; `None` once the last piece was returned.
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> Iterator for SplitAscii<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let r = self.rest?;
        match r.bytes().position(|b| b == self.sep) {
            Some(i) => {
                self.rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                self.rest = None;
                Some(r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edges_split_like_the_standard_library() {
        for s in [
            "",
            "/",
            "//",
            "/a",
            "a/",
            "/api/v1/users/8812",
            "é/ü//",
            "a&b=c&&",
        ] {
            for sep in [b'/', b'&'] {
                let ours: Vec<&str> = split_ascii(s, sep).collect();
                let std: Vec<&str> = s.split(sep as char).collect();
                assert_eq!(ours, std, "{s:?} on {:?}", sep as char);
            }
        }
    }

    proptest! {
        #[test]
        fn splits_like_the_standard_library(s in "[a/&é€0-9]{0,40}") {
            for sep in [b'/', b'&'] {
                let ours: Vec<&str> = split_ascii(&s, sep).collect();
                let std: Vec<&str> = s.split(sep as char).collect();
                prop_assert_eq!(ours, std);
            }
        }
    }
}
