//! Generated code for the CNMAS contracts (`proto/cnmas/<area>/v1`).

// Generated code: its shape follows the .proto files, not our lint preferences.
#![allow(
    clippy::large_enum_variant,
    clippy::doc_lazy_continuation,
    clippy::doc_overindented_list_items
)]

pub mod cnmas {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("cnmas.common.v1");
        }
    }
    pub mod intake {
        pub mod v1 {
            tonic::include_proto!("cnmas.intake.v1");
        }
    }
    pub mod consent {
        pub mod v1 {
            tonic::include_proto!("cnmas.consent.v1");
        }
    }
    pub mod scheduler {
        pub mod v1 {
            tonic::include_proto!("cnmas.scheduler.v1");
        }
    }
    pub mod dialer {
        pub mod v1 {
            tonic::include_proto!("cnmas.dialer.v1");
        }
    }
    pub mod results {
        pub mod v1 {
            tonic::include_proto!("cnmas.results.v1");
        }
    }
    pub mod rights {
        pub mod v1 {
            tonic::include_proto!("cnmas.rights.v1");
        }
    }
}

pub use cnmas::common::v1 as common;
pub use cnmas::consent::v1 as consent;
pub use cnmas::dialer::v1 as dialer;
pub use cnmas::intake::v1 as intake;
pub use cnmas::results::v1 as results;
pub use cnmas::rights::v1 as rights;
pub use cnmas::scheduler::v1 as scheduler;

pub mod support;
