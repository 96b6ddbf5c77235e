//! Client access control: who may use the Redis front end, and whether they may write.
//!
//! Off by default: every connection may run every command, as with a Redis server without a
//! password. An [`AccessControl`] (the `kvserver` binary builds one from `--requirepass` and
//! `--users-file`) names the users, each with a [`Permission`] and a [`PasswordHash`]; a
//! connection then runs nothing but `AUTH`, `HELLO`, `PING` and `QUIT` until it authenticates
//! as one of them (see [`redis`](crate::redis), "Access control"). `--requirepass PASSWORD`
//! is the user `default`, with read-write permission, so that `AUTH PASSWORD` works as it
//! does with Redis.
//!
//! # The users file
//!
//! One user per line; `#` starts a comment, blank lines are skipped:
//!
//! ```text
//! # user <name> <ro|rw> <password hash>
//! user alice   rw sha256:3f0c5b1e9a2d4c6e8f1a3b5c7d9e0f12:6e3b…(64 hex digits)
//! user reports ro sha256:0b7d2e4f6a8c1e3d5f7a9b2c4d6e8f01:a41f…(64 hex digits)
//! ```
//!
//! * `name`: 1 to 64 characters, none of them whitespace or control characters, each name
//!   once. `default` is the user `AUTH <password>` (one argument) authenticates as; with
//!   `--requirepass` it is that password's user, and the file must not name it.
//! * `ro` (read-only): every read, and `INFO`, `SCAN`, `KEYS`, …; any write (`SET`, `MSET`,
//!   `APPEND`, `DEL`, `UNLINK`, and a `RAFTKV.REQUEST` carrying a write or a session
//!   registration) is answered `-NOPERM`. `rw` (read-write): everything.
//! * the hash: `sha256:<salt>:<digest>`, as `kvserver --hash-password` prints it (see
//!   [`PasswordHash`]). The file never holds a password.
//!
//! A file that does not follow this is refused as a whole, with an error naming the line.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use kvproto::proto::Op;
use sha2::{Digest, Sha256};

/// The user `AUTH <password>` (with one argument) authenticates as, and the user of
/// `--requirepass`: Redis's name for it.
pub const DEFAULT_USER: &str = "default";

/// The bytes of salt [`PasswordHash::new`] draws.
pub const SALT_BYTES: usize = 16;

/// The fewest bytes of salt a hash may have.
pub const MIN_SALT_BYTES: usize = 8;

/// The longest user name.
pub const MAX_NAME_CHARS: usize = 64;

/// What an authenticated connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Reads only (`ro` in the users file): any operation that changes the store or the
    /// session table is refused.
    ReadOnly,
    /// Everything (`rw` in the users file, and the `--requirepass` user).
    ReadWrite,
}

impl Permission {
    /// Whether a connection with this permission may run `op`: a read-write one anything, a
    /// read-only one what is not a write ([`Op::is_write`], which counts session
    /// registrations and ends as writes).
    pub fn allows(self, op: &Op) -> bool {
        self == Permission::ReadWrite || !op.is_write()
    }
}

/// A salted password hash: `SHA-256(salt || password)`, written
/// `sha256:<salt in hex>:<digest in hex>` (lowercase or uppercase hex;
/// [`Display`](fmt::Display) writes lowercase).
///
/// The salt (16 random bytes from [`new`](Self::new)) makes equal passwords hash differently,
/// so one precomputed table cannot crack every file. One SHA-256 is fast on purpose: checking
/// an `AUTH` costs about a microsecond, so `AUTH` cannot be used to burn the server's CPU.
/// The price is that a stolen users file lets an attacker try guesses quickly, offline: use
/// long random passwords (as for Redis, whose ACL files hold unsalted SHA-256 hashes), such as
/// `openssl rand -base64 24`, and keep the file readable by the server's user only.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    salt: Vec<u8>,
    digest: [u8; 32],
}

impl PasswordHash {
    /// The hash of `password` with a fresh random salt of [`SALT_BYTES`] bytes.
    pub fn new(password: &[u8]) -> PasswordHash {
        PasswordHash::with_salt(&rand::random::<[u8; SALT_BYTES]>(), password)
    }

    /// The hash of `password` with `salt`.
    pub fn with_salt(salt: &[u8], password: &[u8]) -> PasswordHash {
        PasswordHash { salt: salt.to_vec(), digest: digest(salt, password) }
    }

    /// Whether `password` is the password hashed. It takes the same time wherever the
    /// digests differ.
    pub fn verify(&self, password: &[u8]) -> bool {
        let other = digest(&self.salt, password);
        self.digest.iter().zip(other).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

/// `SHA-256(salt || password)`.
fn digest(salt: &[u8], password: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password);
    hasher.finalize().into()
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}:{}", hex(&self.salt), hex(&self.digest))
    }
}

/// Not the hash itself: a hash is not a password, but there is no need to spread it.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(sha256:…)")
    }
}

impl FromStr for PasswordHash {
    type Err = String;

    /// Parses `sha256:<salt-hex>:<digest-hex>`; the error says what is wrong.
    fn from_str(text: &str) -> Result<PasswordHash, String> {
        const FORMAT: &str = "expected sha256:<salt-hex>:<digest-hex>, as `kvserver \
                              --hash-password` prints it";
        let mut parts = text.split(':');
        let (Some(scheme), Some(salt), Some(digest), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("the password hash {text:?}: {FORMAT}"));
        };
        if scheme != "sha256" {
            return Err(format!("the password hash scheme {scheme:?} is not sha256 ({FORMAT})"));
        }
        let salt = unhex(salt).ok_or_else(|| format!("the salt {salt:?} is not hex ({FORMAT})"))?;
        if salt.len() < MIN_SALT_BYTES {
            return Err(format!(
                "the salt is {} bytes; at least {MIN_SALT_BYTES} (twice as many hex digits), \
                 please ({FORMAT})",
                salt.len()
            ));
        }
        let digest = unhex(digest)
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
            .ok_or_else(|| format!("the digest {digest:?} is not 64 hex digits ({FORMAT})"))?;
        Ok(PasswordHash { salt, digest })
    }
}

/// `bytes` as lowercase hex.
fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(text, "{b:02x}");
    }
    text
}

/// The bytes `text` spells in hex (either case); `None` if it is not an even number of hex
/// digits.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

/// The users a Redis front end lets in (see the [module docs](self)).
#[derive(Clone, Default)]
pub struct AccessControl {
    users: BTreeMap<String, User>,
}

#[derive(Clone)]
struct User {
    permission: Permission,
    hash: PasswordHash,
    /// The users file's line that defined the user (`None`: not the file).
    line: Option<usize>,
}

/// The user names and their permissions; not the hashes.
impl fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.users.iter().map(|(name, u)| (name, u.permission))).finish()
    }
}

impl AccessControl {
    /// No users: nobody can authenticate until some are added.
    pub fn new() -> AccessControl {
        AccessControl::default()
    }

    /// Only the user [`DEFAULT_USER`], read-write, with `password`: what `--requirepass`
    /// sets up. The password is kept hashed, not as given.
    pub fn with_password(password: &[u8]) -> AccessControl {
        let mut access = AccessControl::new();
        let hash = PasswordHash::new(password);
        access.add_user(DEFAULT_USER, Permission::ReadWrite, hash).expect("the first user");
        access
    }

    /// Adds a user.
    ///
    /// # Errors
    /// If the name is already taken, or is not a valid name (see the module docs).
    pub fn add_user(
        &mut self,
        name: &str,
        permission: Permission,
        hash: PasswordHash,
    ) -> Result<(), String> {
        self.add(name, User { permission, hash, line: None })
    }

    fn add(&mut self, name: &str, user: User) -> Result<(), String> {
        check_name(name)?;
        if let Some(first) = self.users.get(name) {
            return Err(match first.line {
                Some(line) => format!("user {name:?} is already defined on line {line}"),
                None if name == DEFAULT_USER => format!(
                    "user {name:?} is already defined: with --requirepass, it is that \
                     password's user (drop --requirepass, or this line)"
                ),
                None => format!("user {name:?} is already defined"),
            });
        }
        self.users.insert(name.to_string(), user);
        Ok(())
    }

    /// Adds the users of a users file's `text` (format in the module docs); all or none.
    ///
    /// # Errors
    /// The first problem, as `line N: what is wrong`: a line that is not
    /// `user <name> <ro|rw> <hash>`, a bad name, permission or hash, a user defined twice
    /// (or one the access control already has), or no user at all.
    pub fn add_users_file(&mut self, text: &str) -> Result<(), String> {
        let mut added = self.clone();
        let mut count = 0;
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            let at = |e: String| format!("line {line_no}: {e}");
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let ["user", name, permission, hash] = words[..] else {
                return Err(at(format!(
                    "expected `user <name> <ro|rw> <password hash>`, found {line:?}"
                )));
            };
            let permission = match permission {
                "ro" => Permission::ReadOnly,
                "rw" => Permission::ReadWrite,
                other => {
                    return Err(at(format!(
                        "permission {other:?} of user {name:?}: expected ro (read-only) or rw \
                         (read-write)"
                    )));
                }
            };
            let hash: PasswordHash = hash.parse().map_err(|e| at(format!("user {name:?}: {e}")))?;
            added.add(name, User { permission, hash, line: Some(line_no) }).map_err(at)?;
            count += 1;
        }
        if count == 0 {
            return Err("no users: add lines `user <name> <ro|rw> <password hash>`".into());
        }
        *self = added;
        Ok(())
    }

    /// The permission of `user` if `password` is its password; `None` if it is not, or there
    /// is no such user (which takes as long as a wrong password, so that timing does not
    /// tell which names exist).
    pub fn authenticate(&self, user: &str, password: &[u8]) -> Option<Permission> {
        match self.users.get(user) {
            Some(u) => u.hash.verify(password).then_some(u.permission),
            None => {
                std::hint::black_box(digest(&[0; SALT_BYTES], password));
                None
            }
        }
    }

    /// The users' names and permissions, in name order.
    pub fn users(&self) -> impl Iterator<Item = (&str, Permission)> {
        self.users.iter().map(|(name, u)| (name.as_str(), u.permission))
    }
}

/// Checks a user name: 1 to [`MAX_NAME_CHARS`] characters, no whitespace or control ones.
fn check_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(format!("user name {name:?}: 1 to {MAX_NAME_CHARS} characters, please"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("user name {name:?}: no whitespace or control characters, please"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_and_verify_only_their_password() {
        let hash = PasswordHash::new(b"correct horse");
        let text = hash.to_string();
        let parts: Vec<&str> = text.split(':').collect();
        assert_eq!(parts.len(), 3, "{text}");
        assert_eq!(parts[0], "sha256");
        assert_eq!(parts[1].len(), 2 * SALT_BYTES, "{text}");
        assert_eq!(parts[2].len(), 64, "{text}");
        let parsed: PasswordHash = text.parse().unwrap();
        assert_eq!(parsed, hash);
        assert_eq!(parsed.to_string(), text);
        assert_eq!(text.to_uppercase().replace("SHA256", "sha256").parse(), Ok(hash.clone()));
        assert!(parsed.verify(b"correct horse"));
        assert!(!parsed.verify(b"correct horsf"));
        assert!(!parsed.verify(b"correct horse "));
        assert!(!parsed.verify(b""));
        assert!(!text.contains(&hex(b"correct horse")), "the password is not in the hash");
    }

    #[test]
    fn a_different_salt_gives_a_different_hash() {
        let a = PasswordHash::with_salt(b"salt-one", b"pw");
        let b = PasswordHash::with_salt(b"salt-two", b"pw");
        assert_ne!(a.digest, b.digest);
        assert!(a.verify(b"pw") && b.verify(b"pw"));
        // Fresh salts differ, so hashing the same password twice gives two hashes.
        let (c, d) = (PasswordHash::new(b"pw"), PasswordHash::new(b"pw"));
        assert_ne!(c.salt, d.salt);
        assert_ne!(c.to_string(), d.to_string());
        // The digest is SHA-256 over salt, then password (a known answer: SHA-256("abc")).
        let known = PasswordHash::with_salt(b"ab", b"c");
        assert_eq!(
            hex(&known.digest),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn malformed_hashes_say_what_is_wrong() {
        let digest = "ab".repeat(32);
        for (bad, why) in [
            ("plain-password".to_string(), "expected sha256:<salt-hex>:<digest-hex>"),
            (format!("md5:00112233445566778899:{digest}"), "scheme \"md5\""),
            (format!("sha256:0011zz:{digest}"), "is not hex"),
            (format!("sha256:001:{digest}"), "is not hex"),
            (format!("sha256:0011:{digest}"), "the salt is 2 bytes"),
            ("sha256:0011223344556677:abcd".to_string(), "is not 64 hex digits"),
            (format!("sha256:0011223344556677:{digest}:x"), "expected sha256:"),
        ] {
            let e = bad.parse::<PasswordHash>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn users_files_parse_and_users_authenticate() {
        let (alice, reports) = (PasswordHash::new(b"a-pw"), PasswordHash::new(b"r-pw"));
        let text = format!(
            "# users\n\nuser alice rw {alice}   # the admin\n  user\treports  ro {reports}\n"
        );
        let mut access = AccessControl::new();
        access.add_users_file(&text).unwrap();
        let users: Vec<_> = access.users().collect();
        assert_eq!(users, [("alice", Permission::ReadWrite), ("reports", Permission::ReadOnly)]);
        assert_eq!(access.authenticate("alice", b"a-pw"), Some(Permission::ReadWrite));
        assert_eq!(access.authenticate("reports", b"r-pw"), Some(Permission::ReadOnly));
        assert_eq!(access.authenticate("reports", b"a-pw"), None);
        assert_eq!(access.authenticate("nobody", b"a-pw"), None);
        assert_eq!(access.authenticate(DEFAULT_USER, b""), None, "no default user");
        assert!(!format!("{access:?}").contains(&alice.to_string()), "Debug shows no hashes");

        let mut access = AccessControl::with_password(b"secret");
        assert_eq!(access.authenticate(DEFAULT_USER, b"secret"), Some(Permission::ReadWrite));
        assert_eq!(access.authenticate(DEFAULT_USER, b"Secret"), None);
        access.add_users_file(&format!("user alice rw {alice}\n")).unwrap();
        assert_eq!(access.authenticate("alice", b"a-pw"), Some(Permission::ReadWrite));
        assert_eq!(access.users().count(), 2);
    }

    #[test]
    fn users_file_errors_name_the_line() {
        let hash = PasswordHash::new(b"pw").to_string();
        let cases = [
            (format!("# c\nuser alice rw {hash}\nuser bob rw\n"), "line 3: expected `user <name>"),
            (format!("person alice rw {hash}\n"), "line 1: expected `user <name>"),
            (format!("\n\nuser alice rw {hash} extra\n"), "line 3: expected"),
            (format!("user alice admin {hash}\n"), "line 1: permission \"admin\" of user"),
            ("user alice ro hunter2\n".to_string(), "line 1: user \"alice\": the password hash"),
            (
                format!("user alice ro {hash}\n# x\nuser alice rw {hash}\n"),
                "line 3: user \"alice\" is already defined on line 1",
            ),
            (format!("user {} ro {hash}\n", "x".repeat(65)), "line 1: user name"),
            ("# nobody\n\n".to_string(), "no users"),
        ];
        for (text, want) in cases {
            let mut access = AccessControl::new();
            let e = access.add_users_file(&text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
            assert_eq!(access.users().count(), 0, "nothing is added from a bad file");
        }
        // With --requirepass, the file may not redefine `default`.
        let mut access = AccessControl::with_password(b"pw");
        let e = access.add_users_file(&format!("user default ro {hash}\n")).unwrap_err();
        assert!(e.starts_with("line 1: user \"default\" is already defined: with --requirepass"));
        // Without it, it may.
        let mut access = AccessControl::new();
        access.add_users_file(&format!("user default ro {hash}\n")).unwrap();
        assert_eq!(access.authenticate(DEFAULT_USER, b"pw"), Some(Permission::ReadOnly));
    }

    #[test]
    fn read_only_allows_only_reads() {
        let key = bytes::Bytes::from_static(b"k");
        let reads = [
            Op::Get { key: key.clone() },
            Op::GetMany { keys: vec![key.clone()] },
            Op::Count,
            Op::Scan { start: key.clone(), end: None, limit: 1 },
        ];
        let writes = [
            Op::Put { key: key.clone(), value: key.clone() },
            Op::Append { key: key.clone(), value: key.clone() },
            Op::Delete { key: key.clone() },
            Op::PutMany { pairs: vec![(key.clone(), key.clone())] },
            Op::DeleteMany { keys: vec![key] },
            Op::Register { id: 0, ttl_ms: 0, retire: None },
            Op::EndSession { id: 1 },
        ];
        for op in &reads {
            assert!(Permission::ReadOnly.allows(op) && Permission::ReadWrite.allows(op), "{op:?}");
        }
        for op in &writes {
            assert!(!Permission::ReadOnly.allows(op) && Permission::ReadWrite.allows(op), "{op:?}");
        }
    }
}
