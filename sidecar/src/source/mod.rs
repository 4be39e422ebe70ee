//! Where configuration comes from: a file reloaded on change or SIGHUP ([`reload`]), or the
//! control plane's push stream ([`managed`]). Both hand text to the snapshot builder and swap
//! the result in the same way ([`reload::swap_in`]). In managed mode the sidecar also reports
//! its telemetry to the control plane ([`report`]) and, while its service is tapped, the
//! requests it samples ([`tap`]).

pub mod managed;
pub mod reload;
pub mod report;
pub mod tap;
