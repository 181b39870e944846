//! The `easel` command: a thin edge over the library that prints errors as sentences and turns
//! them into exit codes.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    easel::memory::reuse_freed_memory();
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", cli::describe(&err));
            if err.downcast_ref::<easel::Error>().is_some_and(|e| matches!(e, easel::Error::Cancelled)) {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
