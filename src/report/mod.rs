//! How runs look: live reporters that consume [`RunEvent`](crate::exec::event::RunEvent)s
//! (progress bars on a terminal, plain timestamped lines otherwise, JSON lines for
//! machines), and the reports written at the end (Markdown sign-off sheet, JSON, JUnit).

pub mod events;
pub mod html;
pub mod junit;
pub mod live;
pub mod markdown;
pub mod model;
pub mod page;

pub use model::Report;
