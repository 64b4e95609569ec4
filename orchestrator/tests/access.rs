//! Roles and their permissions, table-driven.

use orchestrator::access::{parse_user_name, safe_next, Permission, Role};

#[test]
fn each_role_may_do_exactly_its_permissions() {
    use Permission::*;
    let table = [
        (Role::Reader, [true, false, false, false]),
        (Role::DrillOperator, [true, true, false, false]),
        (Role::Operator, [true, true, true, false]),
        (Role::Administrator, [true, true, true, true]),
    ];
    for (role, expect) in table {
        for (p, want) in [Read, TestFailover, Operate, Administer].into_iter().zip(expect) {
            assert_eq!(role.may(p).is_ok(), want, "{role:?} {p:?}");
        }
    }
}

#[test]
fn a_denial_names_the_role_and_who_can_do_it() {
    let e = Role::Reader.may(Permission::Operate).unwrap_err().to_string();
    assert!(e.contains("Reader") && e.contains("fail over") && e.contains("Operator"), "{e}");
    let e = Role::Operator.may(Permission::Administer).unwrap_err().to_string();
    assert!(e.contains("Administrator"), "{e}");
}

#[test]
fn roles_round_trip_through_their_names() {
    for r in Role::ALL {
        assert_eq!(Role::parse(r.as_str()), Some(r));
    }
    assert_eq!(Role::parse("root"), None);
}

#[test]
fn user_names_and_redirects_are_checked() {
    assert_eq!(parse_user_name(" alice ").unwrap(), "alice");
    assert!(parse_user_name("").is_err());
    assert!(parse_user_name("a b").unwrap_err().contains("' '"));
    assert_eq!(safe_next(Some("/jobs/job-1?x=1")), "/jobs/job-1?x=1");
    for bad in [
        "//evil.example",
        "https://evil.example/",
        "/\\evil",
        "jobs",
        "/\t/evil.example",
        "/\n/evil.example",
        "/jobs\r\nSet-Cookie: x=1",
        "/\u{7f}/evil.example",
        "/x\\..\\evil",
    ] {
        assert_eq!(safe_next(Some(bad)), "/", "{bad}");
    }
    assert_eq!(safe_next(None), "/");
}
