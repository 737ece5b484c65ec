//! The Portcullis policy compiler: policy source -> checked AST -> signed bytecode bundle.
//!
//! Pipeline: [`syntax`] (nom) -> [`ast`] -> `check` -> `lower` / `codegen` -> `bundle` bytes.
//! `interp` is a tree-walking reference interpreter over the AST, the oracle the VM is tested
//! against. The `policyc` binary (`src/main.rs`) is a thin CLI over this library.

pub mod ast;
pub mod check;
pub mod cli;
pub mod codegen;
pub mod diag;
pub mod fmt;
pub mod interp;
pub mod layers;
pub mod lower;
pub mod protocol;
pub mod syntax;
pub mod tabletop;
