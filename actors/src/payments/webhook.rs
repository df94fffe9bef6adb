//! Stripe webhook signatures, exactly as Stripe specifies them: the header
//! `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`, where each `v1` is
//! HMAC-SHA256 with the endpoint secret over `"<t>." + raw body`. A request is
//! genuine if any `v1` matches under any configured secret (several during a
//! rotation) and `t` is within the tolerance of now.

use hmac::{Hmac, Mac};

/// How far the signed timestamp may be from now, as Stripe's libraries allow.
pub const TOLERANCE_SECS: i64 = 300;

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Option<Hmac<sha2::Sha256>> {
    // HMAC takes keys of any length; `None` cannot happen in practice, and a
    // missing MAC only means nothing verifies.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The `Stripe-Signature` header for `body` signed at `timestamp`.
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let v1 = mac(secret, timestamp, body)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={timestamp},v1={v1}")
}

/// Whether `header` is a valid signature of `body` under one of `secrets` at `now`.
pub fn verify(secrets: &[String], header: &str, body: &[u8], now: i64) -> bool {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v1)) => candidates.extend(hex::decode(v1).ok()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    // Checked: `t` is the sender's, and i64::MIN would overflow a subtraction.
    let skew = now.checked_sub(timestamp).and_then(i64::checked_abs);
    if skew.is_none_or(|skew| skew > TOLERANCE_SECS) {
        return false;
    }
    secrets.iter().any(|secret| {
        candidates.iter().any(|candidate| {
            // Constant-time comparison inside `verify_slice`.
            mac(secret, timestamp, body).is_some_and(|m| m.verify_slice(candidate).is_ok())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;

    #[test]
    fn a_signature_verifies_under_its_secret_and_only_in_time() {
        let header = signature_header("whsec_a", 1_000, BODY);
        assert!(verify(&["whsec_a".into()], &header, BODY, 1_100));
        assert!(
            !verify(&["whsec_b".into()], &header, BODY, 1_100),
            "wrong secret"
        );
        assert!(
            !verify(&["whsec_a".into()], &header, b"{}", 1_100),
            "other body"
        );
        assert!(
            !verify(
                &["whsec_a".into()],
                &header,
                BODY,
                1_000 + TOLERANCE_SECS + 1
            ),
            "too old"
        );
        assert!(!verify(&["whsec_a".into()], "t=1000", BODY, 1_000), "no v1");
        assert!(!verify(&["whsec_a".into()], "garbage", BODY, 1_000));
    }

    #[test]
    fn extreme_timestamps_are_refused_not_overflowed() {
        let secrets = ["whsec_test".to_owned()];
        for t in [i64::MIN, i64::MAX, -1] {
            let header = format!("t={t},v1=00");
            assert!(!verify(&secrets, &header, BODY, 1_700_000_000));
        }
        assert!(!verify(&secrets, "t=0,v1=00", BODY, i64::MIN));
    }

    #[test]
    fn any_secret_and_any_v1_may_match_during_a_rotation() {
        let old = signature_header("whsec_old", 5_000, BODY);
        let new = signature_header("whsec_new", 5_000, BODY);
        let both = format!("{new},{}", old.split(',').nth(1).unwrap_or_default());
        assert!(verify(&["whsec_old".into()], &both, BODY, 5_000));
        assert!(verify(
            &["whsec_x".into(), "whsec_new".into()],
            &new,
            BODY,
            5_000
        ));
    }
}
