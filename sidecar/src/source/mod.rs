//! Where configuration comes from: a file reloaded on change or SIGHUP ([`reload`]), or the
//! control plane's push stream ([`managed`]). Both hand text to the snapshot builder and swap
//! the result in the same way ([`reload::swap_in`]).

pub mod managed;
pub mod reload;
