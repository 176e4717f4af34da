//! `kubectl-virt`: virtctl as the kubectl plugin `kubectl virt` (kubectl runs `kubectl-virt`
//! from the PATH with the words after `virt`).

fn main() -> std::process::ExitCode {
    kubevirt_controller::virtctl::main(std::env::args_os().collect())
}
