//! The validation policy and the pin, with device binding.

use super::*;

/// "Admins must be on a bound device": an admin session that has not registered within the
/// grace period is denied (and ended); one that registered keeps going.
#[tokio::test]
async fn the_policy_can_require_binding_for_a_role_after_a_grace_period() {
    const GRACE: Duration = Duration::from_secs(30);
    let h = Harness::new();
    let policy = ValidationPolicy::builder()
        .mode(PolicyMode::Deny)
        .require_device_binding(Rule::new("admins").roles(["admin"]), GRACE)
        .build()
        .unwrap();
    let layer = h
        .builder(MemoryStore::new())
        .device_binding(DeviceBinding::new().bound_cookie_lifetime(LIFETIME))
        .policy(policy)
        .build()
        .unwrap();
    let app = common::app(layer);
    let (mut bound, mut unbound) = (Browser::new(&app), Browser::new(&app));
    bound.login().await;
    bound.register().await;
    unbound.login().await;
    // Within the grace period both work (`/login` logs in alice, role admin).
    assert_eq!(unbound.get_me().await, StatusCode::OK);
    h.clock.advance(GRACE);
    assert_eq!(bound.get_me().await, StatusCode::OK);
    assert_eq!(unbound.get_me().await, StatusCode::UNAUTHORIZED);
    assert!(matches!(
        events_of(&h, "policy_denied").as_slice(),
        [SessionEvent::PolicyDenied { reason, .. }] if reason.contains("device-bound")
    ));
    // Denied means ended: the unbound session does not come back.
    assert_eq!(unbound.get_me().await, StatusCode::UNAUTHORIZED);
    // A user without the role is not concerned.
    let mut user = Browser::new(&app);
    let r = user.send(Method::POST, "/login/bob", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    h.clock.advance(GRACE);
    assert_eq!(user.get_me().await, StatusCode::OK);
}

/// A bound session may move (mobile, roaming) when the bound-session pin is relaxed; an
/// unbound one stays pinned exactly.
#[tokio::test]
async fn a_relaxed_pin_for_bound_sessions_leaves_unbound_ones_pinned() {
    let h = Harness::new();
    let layer = h
        .builder(MemoryStore::new())
        .device_binding(
            DeviceBinding::new()
                .bound_cookie_lifetime(LIFETIME)
                .bound_session_pin_mode(PinMode::Off),
        )
        .build()
        .unwrap();
    let app = common::app(layer);
    let (mut bound, mut unbound) = (Browser::new(&app), Browser::new(&app));
    bound.login().await;
    bound.register().await;
    unbound.login().await;
    let elsewhere = common::peer("198.51.100.7");
    bound.peer = elsewhere;
    unbound.peer = elsewhere;
    assert_eq!(bound.get_me().await, StatusCode::OK);
    assert_eq!(unbound.get_me().await, StatusCode::UNAUTHORIZED);
    assert_eq!(events_of(&h, "pin_violation").len(), 1);
    // The bound session still needs its bound cookie from the new address.
    h.clock.advance(LIFETIME);
    assert_eq!(bound.get_me().await, StatusCode::UNAUTHORIZED);
    bound.refresh().await;
    assert_eq!(bound.get_me().await, StatusCode::OK);
}
