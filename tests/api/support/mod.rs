//! Test support, not tests: the server and database per test (`helpers`),
//! the real binary as a child process (`daemon`), a TCP proxy that can make
//! the database vanish (`proxy`), a loopback SMTP listener (`smtp`) and a
//! real upstream for gateway routes (`upstream`). The Galera suite
//! (`tests/cluster`) includes some of these files by path.

pub mod daemon;
pub mod helpers;
pub mod proxy;
pub mod smtp;
pub mod upstream;
