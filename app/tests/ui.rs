//! The portal's formatting and confirmation helpers. An integration test rather than unit tests in `ui.rs`: a unit
//! test harness compiles the whole Leptos crate a second time (half a minute of a fresh `./x test`), this binary
//! only links it.

use app::ui::{acknowledgement_text, fmt_bytes, fmt_duration, fmt_time, op_impact};

/// The portal's classes and acknowledgements follow the core's classification of every operation.
#[cfg(feature = "ssr")]
#[test]
fn every_operation_is_confirmed_as_far_as_it_reaches() {
    for op in orchestrator::lifecycle::OPERATIONS {
        let name = orchestrator::domain::wire_name(&op);
        let impact = orchestrator::domain::wire_name(&op.impact());
        assert_eq!(op_impact(&name), impact, "{name}");
        assert_eq!(acknowledgement_text(&name).is_some(), impact != "harmless", "{name}");
    }
}

#[test]
fn times_render_as_utc_calendar_dates() {
    assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(fmt_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
    assert_eq!(fmt_time(1_795_697_525_000), "2026-11-26 12:52:05 UTC");
}

#[test]
fn durations_and_sizes_read_naturally() {
    assert_eq!(fmt_duration(0), "0 s");
    assert_eq!(fmt_duration(250), "250 ms");
    assert_eq!(fmt_duration(95_000), "1 min 35 s");
    assert_eq!(fmt_duration(7_260_000), "2 h 1 min");
    assert_eq!(fmt_duration(900_000), "15 min");
    assert_eq!(fmt_duration(7_200_000), "2 h");
    assert_eq!(fmt_bytes(512), "512 B");
    assert_eq!(fmt_bytes(16 << 20), "16.0 MiB");
}
