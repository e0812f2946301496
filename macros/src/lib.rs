//! `#[multiprocess::managed]`: shares your own type through a manager, from its trait (see the
//! `multiprocess::managers` docs). Use it through the `multiprocess` crate: the code it writes
//! names `::multiprocess` paths (serde's traits through `multiprocess::__serde`, so that a
//! crate need not depend on serde to share a trait).
//!
//! `model` reads the trait (and refuses what cannot travel), `digest` hashes its signatures,
//! `expand` writes the proxy, the interface and the serde checks.

mod digest;
mod expand;
mod model;

use proc_macro::TokenStream;
use quote::ToTokens;

/// Makes a trait shareable through a manager: writes `impl Interface for dyn Trait` and a
/// proxy type, `TraitProxy`, with the trait's methods.
///
/// The trait stays as written. Beside it come:
///
/// - `struct TraitProxy` (with the trait's visibility): `Clone`, `Debug`, `Serialize`,
///   `Deserialize` and `From<Handle>`, with one method per trait method, of the same name and
///   arguments, taking `&self` and returning `multiprocess::Result` of the method's result;
/// - `impl Interface for dyn Trait`, whose objects are `Box<dyn Trait + Send>` (what a
///   registered factory returns), and whose `DIGEST` hashes the methods' names and
///   signatures, so that a client that knows the trait by another definition is refused at
///   `create`;
/// - a check, at `cargo check`, that every argument and result is a serde type
///   (`Serialize + DeserializeOwned + Send + 'static`), naming the method when one is not.
///
/// Methods take `&self` or `&mut self` and owned arguments; a method may have a default body.
/// The macro refuses, at the offending span: generic methods, `async fn`, associated
/// functions, `self` by value, references (take `String` for `&str`), `impl Trait`, and
/// generics, lifetimes, associated types and consts on the trait.
///
/// ```ignore
/// use multiprocess::managers::SyncManager;
///
/// #[multiprocess::managed]
/// pub trait Counter {
///     fn increment(&mut self, by: i64) -> i64;
///     fn get(&self) -> i64;
/// }
///
/// struct Local(i64);
/// impl Counter for Local {
///     fn increment(&mut self, by: i64) -> i64 { self.0 += by; self.0 }
///     fn get(&self) -> i64 { self.0 }
/// }
///
/// fn new_counter(start: i64) -> Box<dyn Counter + Send> { Box::new(Local(start)) }
///
/// let m = SyncManager::builder().register::<dyn Counter, _, _>("Counter", new_counter).start()?;
/// let c: CounterProxy = m.create::<dyn Counter, _>("Counter", 10)?;
/// assert_eq!(c.increment(5)?, 15);
/// assert_eq!(c.get()?, 15);
/// ```
#[proc_macro_attribute]
pub fn managed(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = proc_macro2::TokenStream::from(attr);
    let item = proc_macro2::TokenStream::from(item);
    let mut out = item.clone();
    let expanded = match syn::parse2::<syn::Item>(item) {
        Ok(syn::Item::Trait(item)) if attr.is_empty() => match model::methods(&item) {
            Ok(methods) => Ok(expand::expand(&item, &methods, true)),
            Err(model::Refused { error, methods: Some(methods) }) => {
                // The proxy of the methods it can take (no `Interface`: the trait as written
                // may not even make a `dyn Trait`), so that only the refusals are reported.
                out.extend(expand::expand(&item, &methods, false));
                Err(error)
            }
            Err(model::Refused { error, methods: None }) => Err(error),
        },
        Ok(syn::Item::Trait(_)) => Err(syn::Error::new_spanned(attr, "`#[managed]` takes no arguments")),
        Ok(other) => Err(syn::Error::new_spanned(
            item_keyword(&other),
            "`#[multiprocess::managed]` goes on a trait, whose methods a proxy calls in a manager's server",
        )),
        Err(e) => Err(e),
    };
    match expanded {
        Ok(tokens) => out.extend(tokens),
        Err(e) => out.extend(e.to_compile_error()),
    }
    out.into()
}

/// Where to point when the item is not a trait: its keyword (or all of it).
fn item_keyword(item: &syn::Item) -> proc_macro2::TokenStream {
    match item {
        syn::Item::Struct(s) => s.struct_token.to_token_stream(),
        syn::Item::Enum(e) => e.enum_token.to_token_stream(),
        syn::Item::Fn(f) => f.sig.fn_token.to_token_stream(),
        syn::Item::Impl(i) => i.impl_token.to_token_stream(),
        other => other.to_token_stream(),
    }
}
