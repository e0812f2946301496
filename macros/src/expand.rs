//! The code `#[managed]` writes beside a trait: its proxy, `impl Interface for dyn Trait`, and
//! the checks that every argument and result is a serde type.

use crate::digest::digest;
use crate::model::Method;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Ident, ItemTrait, LitStr, Type};

/// Everything but the trait itself: the proxy with `methods`, and `impl Interface for dyn
/// Trait` if `interface`.
pub(crate) fn expand(item: &ItemTrait, methods: &[Method], interface: bool) -> TokenStream {
    let trait_ident = &item.ident;
    let vis = &item.vis;
    let name = trait_ident.unraw().to_string();
    let proxy = format_ident!("{}Proxy", trait_ident.unraw(), span = trait_ident.span());
    let digest = digest(&name, methods);
    let proxy_doc = LitStr::new(
        &format!(
            "A client's proxy to a shared `dyn {name}` in a manager's server, written by \
             `#[multiprocess::managed]`: each method calls the object's, in the server, and returns \
             its result, or the error of the call. It is a reference to the object (shared by its \
             clones) and travels to other processes as every proxy does."
        ),
        Span::call_site(),
    );
    let signatures: Vec<_> = methods.iter().map(|m| Signature::new(&name, m)).collect();
    let checks = signatures.iter().map(Signature::checks);
    let proxy_methods = signatures.iter().enumerate().map(|(index, s)| s.proxy_method(index as u32));
    let arms = signatures.iter().enumerate().map(|(index, s)| s.dispatch_arm(trait_ident, index as u32));

    // What each method's helper gives: its arguments' decoder, its proxy's call and its
    // result's encoder, with the serde bounds met inside.
    let wire = (!methods.is_empty()).then(|| {
        quote! {
            // Some fields are unread when a refused method leaves the trait without `Interface`.
            #[allow(dead_code)]
            struct __Wire<A, R> {
                decode: fn(&[u8]) -> ::multiprocess::Result<A>,
                call: fn(&::multiprocess::managers::Handle, u32, &A) -> ::multiprocess::Result<R>,
                encode: fn(&R) -> ::multiprocess::Result<::std::vec::Vec<u8>>,
            }
        }
    });

    let interface = interface.then(|| {
        quote! {
            impl ::multiprocess::managers::Interface for dyn #trait_ident {
                const NAME: &'static str = #name;
                const DIGEST: u64 = #digest;
                type Object = ::std::boxed::Box<dyn #trait_ident + ::core::marker::Send>;
                type Proxy = #proxy;

                fn dispatch(
                    object: &mut Self::Object,
                    method: u32,
                    args: &[u8],
                ) -> ::multiprocess::Result<::std::vec::Vec<u8>> {
                    match method {
                        #(#arms)*
                        _ => ::core::result::Result::Err(::multiprocess::managers::no_such_method::<Self>(method)),
                    }
                }
            }
        }
    });

    quote! {
        #[doc = #proxy_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #proxy(::multiprocess::managers::Handle);

        const _: () = {
            #wire
            #(#checks)*

            impl ::core::convert::From<::multiprocess::managers::Handle> for #proxy {
                fn from(handle: ::multiprocess::managers::Handle) -> Self {
                    #proxy(handle)
                }
            }

            impl ::multiprocess::__serde::Serialize for #proxy {
                fn serialize<S: ::multiprocess::__serde::Serializer>(
                    &self,
                    serializer: S,
                ) -> ::core::result::Result<S::Ok, S::Error> {
                    ::multiprocess::__serde::Serialize::serialize(&self.0, serializer)
                }
            }

            impl<'de> ::multiprocess::__serde::Deserialize<'de> for #proxy {
                fn deserialize<D: ::multiprocess::__serde::Deserializer<'de>>(
                    deserializer: D,
                ) -> ::core::result::Result<Self, D::Error> {
                    <::multiprocess::managers::Handle as ::multiprocess::__serde::Deserialize<'de>>::deserialize(
                        deserializer,
                    )
                    .map(#proxy)
                }
            }

            impl #proxy {
                #(#proxy_methods)*
            }

            #interface
        };
    }
}

/// One method as the generated code handles it. Its arguments and result reach serde only
/// through a helper named after the method, generic over them and bounded by a trait per
/// argument and one for the result, each a serde subtrait whose message names the method: a
/// type that is not a serde type fails that bound alone (once: the proxy and the dispatch ask
/// the same), at the type, at `cargo check`, rather than deep in `Handle::call`'s bounds.
struct Signature<'a> {
    trait_name: &'a str,
    method: &'a Method,
    /// `__<method>_arg_<name>` for each argument, then `__<method>_result`.
    checks: Vec<Ident>,
    /// The argument types, and the result type (`()` if none), spanned as the user wrote them.
    types: Vec<TokenStream>,
}

impl<'a> Signature<'a> {
    fn new(trait_name: &'a str, method: &'a Method) -> Signature<'a> {
        let ident = method.ident.unraw();
        let checks = method
            .args
            .iter()
            .map(|a| format_ident!("__{}_arg_{}", ident, a.ident.unraw()))
            .chain([format_ident!("__{}_result", ident)])
            .collect();
        let output = method.output.as_ref().map_or_else(|| quote!(()), spanned);
        let types = method.args.iter().map(|a| spanned(&a.ty)).chain([output]).collect();
        Signature { trait_name, method, checks, types }
    }

    /// `__put`: the method's helper (prefixed: an argument may have the method's name).
    fn helper(&self) -> Ident {
        format_ident!("__{}", self.method.ident.unraw())
    }

    /// `__put::<Arg, Result>()`: the method's `__Wire`.
    fn wire(&self) -> TokenStream {
        let (helper, types) = (self.helper(), &self.types);
        quote!(#helper::<#(#types),*>())
    }

    fn cfgs(&self) -> impl Iterator<Item = &syn::Attribute> {
        self.method.attrs.iter().filter(|a| a.path().is_ident("cfg"))
    }

    /// `pub fn increment(&self, by: i64) -> multiprocess::Result<i64> { self.0.call(0, &(by,)) }`
    fn proxy_method(&self, index: u32) -> TokenStream {
        let m = self.method;
        let (ident, wire) = (&m.ident, self.wire());
        let args = m.args.iter().map(|a| &a.ident);
        let params = m.args.iter().map(|a| {
            let (ident, ty) = (&a.ident, &a.ty);
            quote!(#ident: #ty)
        });
        let output = m.output.as_ref().map_or_else(|| quote!(()), |t| quote!(#t));
        let attrs = &m.attrs;
        let doc = (!m.attrs.iter().any(|a| a.path().is_ident("doc"))).then(|| {
            let doc = format!(
                "Calls `{}::{}` on the shared object, in the manager's server.",
                self.trait_name,
                ident.unraw()
            );
            quote!(#[doc = #doc])
        });
        quote! {
            #(#attrs)*
            #doc
            pub fn #ident(&self, #(#params),*) -> ::multiprocess::Result<#output> {
                (#wire.call)(&self.0, #index, &(#(#args,)*))
            }
        }
    }

    /// `0 => { decode the arguments; call; encode the result }`
    fn dispatch_arm(&self, trait_ident: &Ident, index: u32) -> TokenStream {
        let m = self.method;
        let (ident, wire) = (&m.ident, self.wire());
        let locals: Vec<_> = (0..m.args.len()).map(|i| format_ident!("__arg{i}")).collect();
        let object = if m.mutable { quote!(&mut **object) } else { quote!(&**object) };
        let cfgs = self.cfgs();
        quote! {
            #(#cfgs)*
            #index => {
                let wire = #wire;
                let (#(#locals,)*) = (wire.decode)(args)?;
                let result = <dyn #trait_ident + ::core::marker::Send as #trait_ident>::#ident(#object, #(#locals),*);
                (wire.encode)(&result)
            }
        }
    }

    /// The traits and the helpers that [`Signature`] describes.
    fn checks(&self) -> TokenStream {
        let m = self.method;
        let method = format!("{}::{}", self.trait_name, m.ident.unraw());
        let places = m
            .args
            .iter()
            .map(|a| (a.ty.span(), format!("an argument of `{method}`"), format!("argument `{}`", a.ident)))
            .chain([(
                m.output.as_ref().map_or_else(Span::call_site, |t| t.span()),
                format!("the result of `{method}`"),
                "result".to_string(),
            )]);
        let cfgs: Vec<_> = self.cfgs().collect();
        let traits = places.zip(&self.checks).map(|((at, what, label), check)| {
            let message = format!("`{{Self}}` cannot be {what}, a method of a managed trait: it is not a serde type");
            let label = format!("{label}: not `Serialize + DeserializeOwned + Send + 'static`");
            quote_spanned! {at=>
                #(#cfgs)*
                #[diagnostic::on_unimplemented(
                    message = #message,
                    label = #label,
                    note = "the arguments and results of a managed trait's methods travel between processes, so they must be serde types: `Serialize + DeserializeOwned + Send + 'static`",
                    note = "for a type of your own, derive `serde::Serialize` and `serde::Deserialize`; `Rc`, raw pointers, closures and trait objects cannot travel"
                )]
                #[allow(non_camel_case_types)]
                trait #check:
                    ::multiprocess::__serde::Serialize
                    + ::multiprocess::__serde::DeserializeOwned
                    + ::core::marker::Send
                    + 'static
                {
                }
                #(#cfgs)*
                #[diagnostic::do_not_recommend]
                impl<T> #check for T
                where
                    T: ::multiprocess::__serde::Serialize
                        + ::multiprocess::__serde::DeserializeOwned
                        + ::core::marker::Send
                        + 'static,
                {
                }
            }
        });
        let params: Vec<_> = (0..m.args.len()).map(|i| format_ident!("A{i}")).collect();
        let arg_checks = &self.checks[..m.args.len()];
        let output_check = &self.checks[m.args.len()];
        let helper = self.helper();
        quote! {
            #(#traits)*

            #(#cfgs)*
            fn #helper<#(#params: #arg_checks,)* R: #output_check>() -> __Wire<(#(#params,)*), R> {
                __Wire {
                    decode: ::multiprocess::managers::decode_args::<(#(#params,)*)>,
                    call: ::multiprocess::managers::Handle::call::<(#(#params,)*), R>,
                    encode: ::multiprocess::managers::encode_result::<R>,
                }
            }
        }
    }
}

/// `ty` with every token at `ty`'s span, so that an error about it points at the trait.
fn spanned(ty: &Type) -> TokenStream {
    let at = ty.span();
    quote_spanned!(at=> #ty)
}
