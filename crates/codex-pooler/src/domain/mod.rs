//! Pure rules of the product: key material, token claims, pricing and cost,
//! stream-terminal classification, usage extraction, operators' second-factor
//! codes. Nothing here does I/O.

pub mod classify;
pub mod jwt;
pub mod keys;
pub mod policy;
pub mod pricing;
pub mod totp;
pub mod usage;
