//! `policyc`: check, build, sign, test, inspect and evaluate Portcullis policy bundles.

fn main() {
    std::process::exit(policy::cli::run());
}
