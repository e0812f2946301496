//! `Interface::DIGEST`: a hash of a trait's name and its methods' signatures, in order, so that
//! a client and a server that know the trait by different definitions are refused at `create`.

use crate::model::Method;
use quote::ToTokens;

/// FNV-1a, 64 bits: stable across builds and platforms, and enough to tell definitions apart
/// (this is a consistency check, not a defence).
struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// Adds `field` and a separator (0xff, never in UTF-8), so that `("ab", "c")` and
    /// `("a", "bc")` differ.
    fn field(&mut self, field: &str) {
        for byte in field.bytes().chain([0xff]) {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(Self::PRIME);
        }
    }
}

/// The digest of trait `name` with `methods`: each method's name, receiver, argument types
/// and result type, as token text (argument names do not count).
pub(crate) fn digest(name: &str, methods: &[Method]) -> u64 {
    let mut hash = Fnv1a(Fnv1a::OFFSET_BASIS);
    hash.field(name);
    for method in methods {
        hash.field("fn");
        hash.field(&method.ident.to_string());
        hash.field(if method.mutable { "&mut self" } else { "&self" });
        for arg in &method.args {
            hash.field(&arg.ty.to_token_stream().to_string());
        }
        hash.field("->");
        hash.field(&method.output.as_ref().map_or_else(|| "()".to_string(), |t| t.to_token_stream().to_string()));
    }
    hash.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_values() {
        // The published FNV-1a 64 test vectors, without the separator.
        let fnv = |s: &str| s.bytes().fold(Fnv1a::OFFSET_BASIS, |h, b| (h ^ u64::from(b)).wrapping_mul(Fnv1a::PRIME));
        assert_eq!(fnv(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn digest_sees_every_part_of_a_signature() {
        let digest_of = |src: &str| {
            let item: syn::ItemTrait = syn::parse_str(src).unwrap();
            digest(&item.ident.to_string(), &crate::model::methods(&item).unwrap_or_else(|_| panic!("refused")))
        };
        let base = digest_of("trait C { fn f(&self, a: i64) -> i64; }");
        assert_eq!(base, digest_of("trait C { fn f(&self, renamed: i64) -> i64 { renamed } }"));
        for other in [
            "trait D { fn f(&self, a: i64) -> i64; }",
            "trait C { fn g(&self, a: i64) -> i64; }",
            "trait C { fn f(&mut self, a: i64) -> i64; }",
            "trait C { fn f(&self, a: i32) -> i64; }",
            "trait C { fn f(&self, a: i64, b: i64) -> i64; }",
            "trait C { fn f(&self, a: i64); }",
            "trait C { fn f(&self, a: i64) -> i64; fn h(&self); }",
        ] {
            assert_ne!(base, digest_of(other), "{other}");
        }
        assert_eq!(digest_of("trait C { fn f(&self); }"), digest_of("trait C { fn f(&self) -> (); }"));
    }
}
