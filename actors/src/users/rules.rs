//! What makes a username, an email or a password acceptable.

use mart_schema::FieldErrors;

const MIN_PASSWORD: usize = 8;
/// Hashing cost grows with length; nobody needs more.
const MAX_PASSWORD: usize = 1024;

pub(crate) fn check_username(errors: &mut FieldErrors, username: &str) {
    let length = username.chars().count();
    if !(3..=32).contains(&length) {
        errors.add("username", "must be 3 to 32 characters long");
    }
    // No '@': a login name that looks like an email is looked up as one.
    if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        errors.add(
            "username",
            "may only contain letters, digits, '_', '.' and '-'",
        );
    }
}

pub(crate) fn check_email(errors: &mut FieldErrors, field: &str, email: &str) {
    if email.len() > 254 || !email_address::EmailAddress::is_valid(email) || !email.contains('.') {
        errors.add(field, "must be a valid email address");
    }
}

/// Least zxcvbn score accepted: about 10^10 guesses.
const MIN_STRENGTH: zxcvbn::Score = zxcvbn::Score::Three;

/// Length limits, and strength as zxcvbn estimates it: common passwords,
/// keyboard walks, and anything built from `context` (the username, the
/// email) are refused, with zxcvbn's advice on what would do.
pub(crate) fn check_password(
    errors: &mut FieldErrors,
    field: &str,
    password: &str,
    context: &[&str],
) {
    let length = password.chars().count();
    if length < MIN_PASSWORD {
        errors.add(
            field,
            format!("must be at least {MIN_PASSWORD} characters long"),
        );
        return;
    }
    if length > MAX_PASSWORD {
        errors.add(
            field,
            format!("must be at most {MAX_PASSWORD} characters long"),
        );
        return;
    }
    // zxcvbn's cost grows with length; past 100 characters strength is not
    // in doubt.
    if length > 100 {
        return;
    }
    let estimate = zxcvbn::zxcvbn(password, context);
    if estimate.score() < MIN_STRENGTH {
        let advice = estimate
            .feedback()
            .and_then(|f| f.warning().map(|w| w.to_string()))
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "add another word or two".into());
        errors.add(field, format!("is too easy to guess: {advice}"));
    }
}

/// The username an admin created from an email gets: the part before `@`,
/// reduced to the allowed characters.
pub(crate) fn username_from_email(email: &str) -> String {
    let local = email.split('@').next().unwrap_or_default();
    let cleaned: String = local
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .take(32)
        .collect();
    if cleaned.chars().count() >= 3 {
        cleaned
    } else {
        format!("{cleaned}admin")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(f: impl Fn(&mut FieldErrors)) -> FieldErrors {
        let mut errors = FieldErrors::default();
        f(&mut errors);
        errors
    }

    #[test]
    fn usernames_are_three_to_thirty_two_safe_characters() {
        assert!(errors_of(|e| check_username(e, "al_ice.b-1")).is_empty());
        assert!(!errors_of(|e| check_username(e, "al")).is_empty());
        assert!(!errors_of(|e| check_username(e, &"a".repeat(33))).is_empty());
        assert!(!errors_of(|e| check_username(e, "alice@x")).is_empty());
        assert!(!errors_of(|e| check_username(e, "ali ce")).is_empty());
    }

    #[test]
    fn emails_must_look_like_addresses() {
        assert!(errors_of(|e| check_email(e, "email", "a@example.test")).is_empty());
        for bad in ["", "plain", "a@", "@b.c", "a b@c.d", "a@localhost"] {
            assert!(
                !errors_of(|e| check_email(e, "email", bad)).is_empty(),
                "{bad}"
            );
        }
    }

    #[test]
    fn passwords_need_eight_characters_and_must_be_hard_to_guess() {
        let check = |p: &str| {
            errors_of(|e| check_password(e, "password", p, &["alice", "alice@example.test"]))
        };
        assert!(!check("1234567").is_empty());
        for weak in [
            "12345678",
            "password123",
            "qwertyuiop",
            "alice2024",
            "alice@example.test",
        ] {
            assert!(!check(weak).is_empty(), "{weak} accepted");
        }
        for strong in ["correct horse battery", "tangerine-57-orbit", "Vq9#mL2!xR"] {
            assert!(
                check(strong).is_empty(),
                "{strong} refused: {}",
                check(strong)
            );
        }
    }

    #[test]
    fn an_admin_username_comes_from_the_email() {
        assert_eq!(username_from_email("ops.team@example.test"), "ops.team");
        assert_eq!(username_from_email("a+b@example.test"), "abadmin");
    }
}
