//! The `policyc` command line. Each subcommand lives in its own module; `run` parses arguments and
//! returns the process exit code (0 ok, 1 the checked thing failed, 2 usage or I/O error).
