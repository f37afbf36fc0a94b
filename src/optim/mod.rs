//! Stochastic gradient descent on the flat parameter buffer: momentum,
//! weight decay, Nesterov ([`Sgd`]), and learning-rate schedules
//! ([`LrSchedule`]).

mod schedule;
mod sgd;

pub use schedule::LrSchedule;
pub use sgd::{Sgd, SgdConfig};
