#![no_std]
// This file exists so the agent can name this crate as a build dependency:
// cargo then rebuilds the agent when the program changes. The program itself
// is the `watt` binary target (src/main.rs), built for bpfel-unknown-none.
