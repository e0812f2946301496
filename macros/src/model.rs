//! What `#[managed]` reads from a trait: its methods, each with a receiver, arguments and a
//! result that can travel between processes, or an error at the span that cannot.

use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, Pat, PathArguments, ReturnType, Signature, TraitItem,
    TraitItemFn, Type,
};

/// At most this many arguments: serde encodes tuples of up to 16 values.
const MAX_ARGS: usize = 16;

/// A method of a managed trait, as its proxy and the server's dispatch see it.
pub(crate) struct Method {
    pub(crate) ident: Ident,
    /// `&mut self` (else `&self`).
    pub(crate) mutable: bool,
    pub(crate) args: Vec<Arg>,
    /// `None` for `()`.
    pub(crate) output: Option<Type>,
    /// The method's `doc` and `cfg` attributes, for its proxy method.
    pub(crate) attrs: Vec<Attribute>,
}

pub(crate) struct Arg {
    /// The argument's name in the trait, or `argN` when it is a pattern.
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}

/// Why a trait cannot be managed: every reason, combined, and the methods that can be, when
/// only some of its items are refused (their proxy is still written, so that the rest of the
/// crate sees `TraitProxy` and only the refusals are reported).
pub(crate) struct Refused {
    pub(crate) error: syn::Error,
    pub(crate) methods: Option<Vec<Method>>,
}

/// Reads the methods of `item`, or every reason it cannot be managed.
pub(crate) fn methods(item: &ItemTrait) -> Result<Vec<Method>, Refused> {
    let mut errors = Errors::default();
    let generics = &item.generics;
    if !generics.params.is_empty() {
        errors.push(generics, "a managed trait cannot have generic parameters or lifetimes: the server holds one `dyn Trait` and its proxy has one concrete signature per method");
    }
    if let Some(clause) = &generics.where_clause {
        errors.push(clause, "a managed trait cannot have a where clause: the server holds it as `dyn Trait`");
    }
    let whole_trait = errors.count() > 0;
    let mut methods = Vec::new();
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(f) => {
                if let Some(method) = method(f, &mut errors) {
                    methods.push(method);
                }
            }
            TraitItem::Type(t) => errors.push(
                t,
                "a managed trait cannot have associated types: its proxy needs every argument and result type known",
            ),
            TraitItem::Const(c) => errors
                .push(c, "a managed trait cannot have associated consts: only methods are called through its proxy"),
            other => errors.push(other, "a managed trait can only have methods"),
        }
    }
    match errors.0 {
        None => Ok(methods),
        Some(error) => Err(Refused { error, methods: (!whole_trait).then_some(methods) }),
    }
}

fn method(f: &TraitItemFn, errors: &mut Errors) -> Option<Method> {
    let before = errors.count();
    let sig = &f.sig;
    check_signature(sig, errors);
    // A lifetime on the receiver is the generic lifetime's error, already reported.
    let mutable = receiver(sig, sig.generics.params.is_empty(), errors);
    let plain = |pat: &Pat| match pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => Some(p.ident.clone()),
        _ => None,
    };
    let taken: Vec<Ident> = sig.inputs.iter().filter_map(typed).filter_map(|t| plain(&t.pat)).collect();
    let mut args = Vec::new();
    for (position, input) in sig.inputs.iter().filter_map(typed).enumerate() {
        check_type(&input.ty, Place::Argument, errors);
        // A pattern gets a name for the proxy's signature, one no other argument has.
        let ident = plain(&input.pat).unwrap_or_else(|| {
            let mut name = format!("arg{position}");
            while taken.iter().any(|t| *t == name) {
                name.push('_');
            }
            Ident::new(&name, input.pat.span())
        });
        args.push(Arg { ident, ty: (*input.ty).clone() });
    }
    if args.len() > MAX_ARGS {
        errors.push(
            &sig.inputs,
            format!(
                "a managed method takes at most {MAX_ARGS} arguments (they travel as one tuple); group them in a struct"
            ),
        );
    }
    let output = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) => {
            check_type(ty, Place::Result, errors);
            Some((**ty).clone())
        }
    };
    let attrs = f.attrs.iter().filter(|a| a.path().is_ident("doc") || a.path().is_ident("cfg")).cloned().collect();
    let mutable = mutable.filter(|_| errors.count() == before)?;
    Some(Method { ident: sig.ident.clone(), mutable, args, output, attrs })
}

fn typed(input: &FnArg) -> Option<&syn::PatType> {
    match input {
        FnArg::Typed(t) => Some(t),
        FnArg::Receiver(_) => None,
    }
}

/// What a method's signature may not have besides its types.
fn check_signature(sig: &Signature, errors: &mut Errors) {
    if let Some(token) = &sig.asyncness {
        errors.push(
            token,
            "a managed method cannot be `async`: a proxy's call waits for the server's answer; make it a plain `fn`",
        );
    }
    if let Some(token) = &sig.unsafety {
        errors.push(
            token,
            "a managed method cannot be `unsafe`: a client cannot uphold its contract in the server's process",
        );
    }
    if let Some(token) = &sig.constness {
        errors.push(token, "a managed method cannot be `const`");
    }
    if let Some(abi) = &sig.abi {
        errors.push(abi, "a managed method cannot have an ABI");
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(variadic, "a managed method cannot be variadic");
    }
    if !sig.generics.params.is_empty() {
        errors.push(&sig.generics, "a managed method cannot be generic (types or lifetimes): its arguments and result are encoded as concrete types; use concrete, owned types");
    }
    if let Some(clause) = &sig.generics.where_clause {
        errors.push(clause, "a managed method cannot have a where clause: the server calls it on a `dyn Trait`");
    }
}

/// Whether the receiver is `&mut self` (`Some(false)` for `&self`), or why it is refused.
fn receiver(sig: &Signature, report_lifetime: bool, errors: &mut Errors) -> Option<bool> {
    let Some(receiver) = sig.receiver() else {
        errors.push(&sig.ident, "a managed method needs a `&self` or `&mut self` receiver: an associated function has no object to call in the server");
        return None;
    };
    match &*receiver.ty {
        Type::Reference(r) if is_self(&r.elem) && r.lifetime.is_none() => Some(r.mutability.is_some()),
        Type::Reference(r) if is_self(&r.elem) => {
            if report_lifetime {
                errors.push(r, "a managed method's receiver cannot name a lifetime: write `&self` or `&mut self`");
            }
            None
        }
        _ => {
            errors.push(receiver, "a managed method takes `&self` or `&mut self`, not `self` by value: the object stays in the manager's server, where every client calls it");
            None
        }
    }
}

fn is_self(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident("Self"))
}

#[derive(Clone, Copy)]
enum Place {
    Argument,
    Result,
}

/// Refuses, anywhere in `ty`, what cannot travel between processes whatever the serde impls:
/// references, `impl Trait` and `Self`. The serde bounds themselves are checked by the
/// compiler, on the generated code.
fn check_type(ty: &Type, place: Place, errors: &mut Errors) {
    match ty {
        Type::Reference(r) => {
            let owned = owned_for(&r.elem);
            let message = match place {
                Place::Argument => format!(
                    "a managed method cannot take a reference: arguments travel to the server's process by value; take `{owned}`"
                ),
                Place::Result => format!(
                    "a managed method cannot return a reference: results travel back from the server's process by value; return `{owned}`"
                ),
            };
            errors.push(r, message);
        }
        Type::ImplTrait(t) => errors.push(
            t,
            "a managed method cannot use `impl Trait`: arguments and results travel between processes as one concrete serde type",
        ),
        Type::Path(p) => {
            if let Some(qself) = &p.qself {
                check_type(&qself.ty, place, errors);
            }
            if p.qself.is_none() && p.path.segments.first().is_some_and(|s| s.ident == "Self") {
                errors.push(p, "a managed method cannot name `Self` in its arguments or result: the object stays in the server, and its proxy has concrete types");
                return;
            }
            for segment in &p.path.segments {
                match &segment.arguments {
                    PathArguments::AngleBracketed(a) => {
                        for arg in &a.args {
                            if let GenericArgument::Type(t) = arg {
                                check_type(t, place, errors);
                            }
                        }
                    }
                    PathArguments::Parenthesized(a) => {
                        a.inputs.iter().for_each(|t| check_type(t, place, errors));
                        if let ReturnType::Type(_, t) = &a.output {
                            check_type(t, place, errors);
                        }
                    }
                    PathArguments::None => {}
                }
            }
        }
        Type::Tuple(t) => t.elems.iter().for_each(|t| check_type(t, place, errors)),
        Type::Array(t) => check_type(&t.elem, place, errors),
        Type::Slice(t) => check_type(&t.elem, place, errors),
        Type::Paren(t) => check_type(&t.elem, place, errors),
        Type::Group(t) => check_type(&t.elem, place, errors),
        _ => {}
    }
}

/// The owned type to suggest for a borrowed `ty`.
fn owned_for(ty: &Type) -> String {
    let text = |ty: &Type| compact(&quote::ToTokens::to_token_stream(ty).to_string());
    let last = match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    };
    let borrowed = [("str", "String"), ("Path", "PathBuf"), ("OsStr", "OsString"), ("CStr", "CString")];
    if let Some((_, owned)) = borrowed.iter().find(|(b, _)| last.as_deref() == Some(b)) {
        return owned.to_string();
    }
    match ty {
        Type::Slice(s) => format!("Vec<{}>", text(&s.elem)),
        Type::Reference(r) => owned_for(&r.elem),
        other => text(other),
    }
}

/// Token text as a person writes it: `Vec<u8>`, not `Vec < u8 >`.
fn compact(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        let glued = matches!(prev, Some('<' | ':' | '&' | '(' | '['))
            || matches!(next, Some('<' | '>' | ',' | ':' | '(' | ')' | ']' | ';'));
        if c != ' ' || !glued {
            out.push(c);
        }
    }
    out
}

/// Errors found so far, reported together.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, at: impl quote::ToTokens, message: impl std::fmt::Display) {
        let error = syn::Error::new_spanned(at, message);
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn count(&self) -> usize {
        self.0.as_ref().map_or(0, |e| e.into_iter().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusals(src: &str) -> Vec<String> {
        let item: ItemTrait = syn::parse_str(src).unwrap();
        match methods(&item) {
            Ok(_) => vec![],
            Err(refused) => refused.error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn accepts_plain_methods() {
        let item: ItemTrait = syn::parse_str(
            "trait C { fn a(&self); fn b(&mut self, x: Vec<u8>, (y, z): (u8, u8)) -> Option<String>; fn c(&self, mut n: u8) -> u8 { n += 1; n } }",
        )
        .unwrap();
        let methods = methods(&item).unwrap_or_else(|_| panic!("refused"));
        assert_eq!(methods.len(), 3);
        assert!(!methods[0].mutable && methods[1].mutable);
        let names: Vec<_> = methods[1].args.iter().map(|a| a.ident.to_string()).collect();
        assert_eq!(names, ["x", "arg1"]);
        assert_eq!(methods[2].args[0].ident, "n");
        assert!(methods[0].output.is_none());
    }

    #[test]
    fn names_patterns_apart_from_other_arguments() {
        let item: ItemTrait = syn::parse_str("trait C { fn a(&self, (x, y): (u8, u8), arg0: u8); }").unwrap();
        let method = methods(&item).unwrap_or_else(|_| panic!("refused")).remove(0);
        let names: Vec<_> = method.args.iter().map(|a| a.ident.to_string()).collect();
        assert_eq!(names, ["arg0_", "arg0"]);
    }

    #[test]
    fn refuses_what_cannot_travel() {
        for (src, expected) in [
            ("trait C<T> { fn a(&self); }", "generic parameters"),
            ("trait C<'a> { fn a(&self); }", "generic parameters"),
            ("trait C where Self: Sized { fn a(&self); }", "where clause"),
            ("trait C { type T; }", "associated types"),
            ("trait C { const N: u8; }", "associated consts"),
            ("trait C { m!(); }", "only have methods"),
            ("trait C { fn a<T>(&self, t: T); }", "cannot be generic"),
            ("trait C { async fn a(&self); }", "`async`"),
            ("trait C { unsafe fn a(&self); }", "`unsafe`"),
            ("trait C { extern \"C\" fn a(&self); }", "ABI"),
            ("trait C { fn a(&self) where u8: Copy; }", "where clause"),
            ("trait C { fn a(); }", "associated function"),
            ("trait C { fn a(self); }", "not `self` by value"),
            ("trait C { fn a(self: std::sync::Arc<Self>); }", "not `self` by value"),
            ("trait C { fn a(&self, s: &str); }", "take `String`"),
            ("trait C { fn a(&self, s: &[(u8, Vec<u8>)]); }", "take `Vec<(u8, Vec<u8>)>`"),
            ("trait C { fn a(&self, s: &std::path::Path); }", "take `PathBuf`"),
            ("trait C { fn a(&self, s: Option<&mut u8>); }", "take `u8`"),
            ("trait C { fn a(&self) -> &str; }", "return `String`"),
            ("trait C { fn a(&self, f: impl Fn()); }", "`impl Trait`"),
            ("trait C { fn a(&self) -> Box<Self>; }", "`Self`"),
            ("trait C { fn a(&self) -> Self::X; }", "`Self`"),
        ] {
            let found = refusals(src);
            assert!(found.len() == 1 && found[0].contains(expected), "{src}: {found:?}");
        }
    }

    #[test]
    fn reports_every_refusal_at_once() {
        assert_eq!(refusals("trait C<T> { type X; fn a(self); fn b(&self, s: &str) -> &str; }").len(), 5);
    }

    #[test]
    fn keeps_the_methods_it_can_take() {
        let read = |src: &str| methods(&syn::parse_str(src).unwrap()).err().unwrap().methods;
        let kept = read("trait C { type X; fn a(self); fn b(&self); }").unwrap();
        assert_eq!(kept.iter().map(|m| m.ident.to_string()).collect::<Vec<_>>(), ["b"]);
        assert!(read("trait C<T> { fn b(&self); }").is_none());
    }

    #[test]
    fn compacts_token_text() {
        let text =
            |src: &str| compact(&quote::ToTokens::to_token_stream(&syn::parse_str::<Type>(src).unwrap()).to_string());
        assert_eq!(text("Vec<u8>"), "Vec<u8>");
        assert_eq!(
            text("std::collections::HashMap<String, Vec<(u8, [u8; 4])>>"),
            "std::collections::HashMap<String, Vec<(u8, [u8; 4])>>"
        );
        assert_eq!(text("Box<dyn Fn(u8) -> u8 + Send>"), "Box<dyn Fn(u8) -> u8 + Send>");
    }
}
