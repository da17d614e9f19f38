pub mod actuate;
pub mod kernel;
pub mod sock_diag;
pub mod sockets;
