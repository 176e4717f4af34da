//! `virtctl`: KubeVirt's command line, a thin wrapper over [`kubevirt_controller::virtctl`].
//! Also `kubectl virt` when linked as `kubectl-virt` on the PATH.

fn main() -> std::process::ExitCode {
    kubevirt_controller::virtctl::main(std::env::args_os().collect())
}
