//! Tiny runtime for Tessera's bare-metal test guests.
#![cfg_attr(target_os = "none", no_std)]
