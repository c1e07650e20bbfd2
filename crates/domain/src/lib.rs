//! Pure domain rules of CNMAS. Nothing here does I/O: every rule can be tested exhaustively.

pub mod calendar;
pub mod clock;
pub mod company;
pub mod email;
pub mod fund;
pub mod geo;
pub mod nir;
pub mod outcome;
pub mod person;
pub mod phone;
pub mod professional;
pub mod retry;
pub mod theme;
