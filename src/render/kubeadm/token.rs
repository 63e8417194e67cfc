//! The bootstrap token khactl creates at `kubeadm init` and every join presents: made here
//! with the operating system's CSPRNG in kubeadm's own format, so khactl knows it before
//! init and never has to read it back from kubeadm's output.

use std::fmt;

/// kubeadm's alphabet (`bootstraputil.GenerateBootstrapToken`): lowercase letters and digits.
const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;

/// A bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}` (k/k
/// `staging/src/k8s.io/cluster-bootstrap/token/api/types.go`). The id is public (it names
/// the token's Secret, `bootstrap-token-<id>`); the secret part is shown by neither
/// `Debug` nor `Display`, only by [`Self::reveal`].
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read random bytes from the operating system for the bootstrap token: {0}")]
    Random(getrandom::Error),
    #[error("not a bootstrap token: expected 6 and 16 lowercase letters or digits joined by a dot")]
    Format,
}

impl BootstrapToken {
    /// A fresh token from the operating system's CSPRNG (`getrandom`).
    pub fn generate() -> Result<Self, TokenError> {
        Self::generate_from(getrandom::fill).map_err(TokenError::Random)
    }

    /// A token from `fill`, a source of uniformly random bytes. Each character takes one
    /// byte below 252 (7 × 36) modulo 36, so every character is equally likely; bytes
    /// of 252 and above are drawn again.
    pub(crate) fn generate_from<E>(
        mut fill: impl FnMut(&mut [u8]) -> Result<(), E>,
    ) -> Result<Self, E> {
        let mut draw = |len: usize| -> Result<String, E> {
            let mut out = String::with_capacity(len);
            let mut buf = [0u8; 32];
            while out.len() < len {
                fill(&mut buf)?;
                for &b in buf.iter().filter(|b| **b < 252) {
                    if out.len() < len {
                        out.push(char::from(ALPHABET[usize::from(b % 36)]));
                    }
                }
            }
            Ok(out)
        };
        let id = draw(ID_LEN)?;
        let secret = draw(SECRET_LEN)?;
        Ok(Self { id, secret })
    }

    /// Reads `id.secret`, for a token kept between runs.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let (id, secret) = split_token(text).ok_or(TokenError::Format)?;
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The public half, e.g. to find the token's Secret `kube-system/bootstrap-token-<id>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The whole token, `id.secret`: for the 0600 file on the node and nothing else.
    pub fn reveal(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

/// `id` and `secret` of a well-formed token (kubeadm's `BootstrapTokenRegexp`).
pub(crate) fn split_token(text: &str) -> Option<(&str, &str)> {
    let (id, secret) = text.split_once('.')?;
    let ok = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, ID_LEN) && ok(secret, SECRET_LEN)).then_some((id, secret))
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .field("secret", &format_args!("<redacted>"))
            .finish()
    }
}

/// `abcdef.<redacted>`: enough to tell tokens apart in messages.
impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.<redacted>", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_kubeadms_format_and_differ() {
        let a = BootstrapToken::generate().unwrap();
        let b = BootstrapToken::generate().unwrap();
        for t in [&a, &b] {
            let text = t.reveal();
            assert!(split_token(&text).is_some(), "{text}");
            assert_eq!(BootstrapToken::parse(&text).unwrap(), *t);
        }
        assert_ne!(a, b);
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let t = BootstrapToken::parse("abc123.0123456789abcdef").unwrap();
        assert_eq!(t.to_string(), "abc123.<redacted>");
        assert_eq!(
            format!("{t:?}"),
            "BootstrapToken { id: \"abc123\", secret: <redacted> }"
        );
        assert_eq!(format!("{t:#?}").matches("0123456789abcdef").count(), 0);
        assert_eq!(t.id(), "abc123");
        assert_eq!(t.reveal(), "abc123.0123456789abcdef");
    }

    /// Bytes of 252 and above would favour the first characters of the alphabet; they are
    /// skipped, and the rest map onto all 36 characters.
    #[test]
    fn generation_rejects_biased_bytes_and_uses_the_whole_alphabet() {
        let mut next = 0u8;
        let t = BootstrapToken::generate_from(|buf: &mut [u8]| {
            for b in buf.iter_mut() {
                *b = next;
                next = next.wrapping_add(1);
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(t.reveal(), "012345.wxyz0123456789ab");
        let mut high = 0;
        let t = BootstrapToken::generate_from(|buf: &mut [u8]| {
            high += 1;
            buf.fill(if high < 3 { 255 } else { 35 });
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(t.reveal(), "zzzzzz.zzzzzzzzzzzzzzzz");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "abcdef",
            "abcdef.0123456789abcde",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcdef.x",
            "abcde-.0123456789abcdef",
        ] {
            assert!(BootstrapToken::parse(bad).is_err(), "{bad}");
        }
    }
}
