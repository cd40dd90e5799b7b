//! Who is calling: API tokens and the credentials that carry them
//! (`token`: made here, stored only as SHA-256, compared in constant time),
//! and the brake on guessing them (`throttle`: failed authentications per
//! client address). Users and their keys are `users`; the lookup of a key
//! inside a paid request is `billing::account::lock`.

pub mod throttle;
pub mod token;
