//! Listeners: where connections arrive.

pub mod local;
