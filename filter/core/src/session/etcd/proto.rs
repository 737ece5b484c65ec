//! The few etcd v3 gRPC messages the filter sends and reads (`etcdserverpb` / `mvccpb`, etcd
//! 3.4+), encoded and decoded by hand: a protobuf runtime and generated code would cost the
//! size-tracked `.wasm` far more than these ~300 lines. Field numbers are etcd's `rpc.proto` and
//! `kv.proto`; only the fields the filter uses are written or read, every other field is skipped.
//!
//! Decoding takes bytes from the network (through Envoy): it never panics, bounds every length by
//! the input, and answers `None` for anything malformed (the caller treats that as the store
//! being unavailable: fail closed).

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A protobuf message being written.
#[derive(Default)]
pub(crate) struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        loop {
            let low = u8::try_from(v & 0x7f).unwrap_or(0);
            v >>= 7;
            if v == 0 {
                self.0.push(low);
                return;
            }
            self.0.push(low | 0x80);
        }
    }

    fn tag(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    /// A length-delimited field (bytes, string, or an embedded message).
    pub(crate) fn bytes(mut self, field: u32, v: &[u8]) -> Msg {
        self.tag(field, LEN);
        self.varint(u64::try_from(v.len()).unwrap_or(u64::MAX));
        self.0.extend_from_slice(v);
        self
    }

    /// An embedded message.
    pub(crate) fn msg(self, field: u32, m: Msg) -> Msg {
        self.bytes(field, &m.0)
    }

    /// An `int64` / `uint64` / enum / bool field (written only when not zero, as proto3 does).
    pub(crate) fn int(mut self, field: u32, v: i64) -> Msg {
        if v != 0 {
            self.tag(field, VARINT);
            // Negative int64 values are ten-byte two's complement varints.
            self.varint(u64::from_ne_bytes(v.to_ne_bytes()));
        }
        self
    }

    /// The encoded bytes.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// One field as read: its number and value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field<'a> {
    Int(u32, u64),
    Bytes(u32, &'a [u8]),
    Other,
}

/// Iterate the fields of a message; stops (and flags `bad`) at the first malformed byte.
struct Fields<'a> {
    rest: &'a [u8],
    bad: bool,
}

fn read_varint(b: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10u32 {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f).checked_shl(i.checked_mul(7)?)?;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl<'a> Fields<'a> {
    fn of(bytes: &'a [u8]) -> Fields<'a> {
        Fields {
            rest: bytes,
            bad: false,
        }
    }

    fn next_field(&mut self) -> Option<Field<'a>> {
        let key = read_varint(&mut self.rest)?;
        let field = u32::try_from(key >> 3).ok()?;
        match u8::try_from(key & 7).ok()? {
            VARINT => Some(Field::Int(field, read_varint(&mut self.rest)?)),
            LEN => {
                let len = usize::try_from(read_varint(&mut self.rest)?).ok()?;
                let v = self.rest.get(..len)?;
                self.rest = self.rest.get(len..)?;
                Some(Field::Bytes(field, v))
            }
            FIXED64 => {
                self.rest = self.rest.get(8..)?;
                Some(Field::Other)
            }
            FIXED32 => {
                self.rest = self.rest.get(4..)?;
                Some(Field::Other)
            }
            _ => None,
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        if self.rest.is_empty() || self.bad {
            return None;
        }
        let f = self.next_field();
        if f.is_none() {
            self.bad = true;
        }
        f
    }
}

/// Decode every field of `bytes` with `each`; `None` when the bytes are not a message.
fn walk<'a>(bytes: &'a [u8], mut each: impl FnMut(Field<'a>) -> Option<()>) -> Option<()> {
    let mut fields = Fields::of(bytes);
    for f in fields.by_ref() {
        each(f)?;
    }
    (!fields.bad).then_some(())
}

fn signed(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

// ---- requests ----

/// `RangeRequest` for one key, or (with `range_end`) a range.
pub(crate) fn range(key: &[u8], range_end: Option<&[u8]>) -> Msg {
    let m = Msg::default().bytes(1, key);
    match range_end {
        Some(end) => m.bytes(2, end),
        None => m,
    }
}

/// The end of the range of every key under `prefix` (etcd's prefix convention: the prefix with
/// its last byte incremented).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last.saturating_add(1));
            return end;
        }
    }
    // Every byte 0xff (or empty): the whole key space.
    vec![0]
}

/// `PutRequest`.
pub(crate) fn put(key: &[u8], value: &[u8], lease: i64) -> Msg {
    Msg::default().bytes(1, key).bytes(2, value).int(3, lease)
}

/// How a `Compare` tests its key.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Compare {
    /// `mod_revision(key) == n` (0: the key does not exist).
    ModRevision(i64),
    /// `create_revision(key) == 0`: the key does not exist.
    Absent,
}

/// `TxnRequest`: if `compare` holds on `key`, put `value` (with `lease`); else read `key` back.
pub(crate) fn txn_put(key: &[u8], compare: Compare, value: &[u8], lease: i64) -> Msg {
    // Compare { result = EQUAL (0), target = MOD (2) | CREATE (1), key, mod/create_revision }.
    let cmp = match compare {
        Compare::ModRevision(rev) => Msg::default().int(2, 2).bytes(3, key).int(6, rev),
        Compare::Absent => Msg::default().int(2, 1).bytes(3, key).int(5, 0),
    };
    let on_success = Msg::default().msg(2, put(key, value, lease));
    let on_failure = Msg::default().msg(1, range(key, None));
    Msg::default()
        .msg(1, cmp)
        .msg(2, on_success)
        .msg(3, on_failure)
}

/// `TxnRequest`: if `key`'s `mod_revision` is `rev` (0: it is absent), put `value` when there
/// is one, attached to `lease` (0: none), else nothing (a read that only wants to know whether
/// `rev` is current); otherwise range the key.
pub(crate) fn txn_at(key: &[u8], rev: i64, value: Option<&[u8]>, lease: i64) -> Msg {
    let cmp = Msg::default().int(2, 2).bytes(3, key).int(6, rev);
    let mut m = Msg::default().msg(1, cmp);
    if let Some(v) = value {
        m = m.msg(2, Msg::default().msg(2, put(key, v, lease)));
    }
    m.msg(3, Msg::default().msg(1, range(key, None)))
}

/// `LeaseGrantRequest` for `ttl_s` seconds.
pub(crate) fn lease_grant(ttl_s: i64) -> Msg {
    Msg::default().int(1, ttl_s)
}

/// `WatchRequest { create_request: { key, range_end, start_revision } }`.
pub(crate) fn watch_create(key: &[u8], range_end: &[u8], start_revision: i64) -> Msg {
    let create = Msg::default()
        .bytes(1, key)
        .bytes(2, range_end)
        .int(3, start_revision);
    Msg::default().msg(1, create)
}

// ---- responses ----

/// `mvccpb.KeyValue` (the fields the filter reads).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyValue {
    pub key: Vec<u8>,
    pub mod_revision: i64,
    pub value: Vec<u8>,
}

fn key_value(bytes: &[u8]) -> Option<KeyValue> {
    let mut kv = KeyValue::default();
    walk(bytes, |f| {
        match f {
            Field::Bytes(1, k) => k.clone_into(&mut kv.key),
            Field::Int(3, r) => kv.mod_revision = signed(r),
            Field::Bytes(5, v) => v.clone_into(&mut kv.value),
            _ => {}
        }
        Some(())
    })?;
    Some(kv)
}

/// The store revision of a `ResponseHeader`.
fn header_revision(bytes: &[u8]) -> Option<i64> {
    let mut rev = 0;
    walk(bytes, |f| {
        if let Field::Int(3, r) = f {
            rev = signed(r);
        }
        Some(())
    })?;
    Some(rev)
}

/// A `RangeResponse`: the store revision and the keys read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RangeResponse {
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    /// More keys matched than were returned.
    pub more: bool,
}

pub(crate) fn range_response(bytes: &[u8]) -> Option<RangeResponse> {
    let mut r = RangeResponse::default();
    walk(bytes, |f| {
        match f {
            Field::Bytes(1, h) => r.revision = header_revision(h)?,
            Field::Bytes(2, kv) => r.kvs.push(key_value(kv)?),
            Field::Int(3, more) => r.more = more != 0,
            _ => {}
        }
        Some(())
    })?;
    Some(r)
}

/// A `TxnResponse` of [`txn_put`]: whether the compare held (the put was made, at `revision`),
/// else the key as it is now (`None`: it does not exist).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TxnResponse {
    pub revision: i64,
    pub succeeded: bool,
    pub current: Option<KeyValue>,
}

pub(crate) fn txn_response(bytes: &[u8]) -> Option<TxnResponse> {
    let mut t = TxnResponse::default();
    walk(bytes, |f| {
        match f {
            Field::Bytes(1, h) => t.revision = header_revision(h)?,
            Field::Int(2, ok) => t.succeeded = ok != 0,
            // ResponseOp { response_range = 1 }
            Field::Bytes(3, op) => walk(op, |f| {
                if let Field::Bytes(1, range) = f {
                    t.current = range_response(range)?.kvs.into_iter().next();
                }
                Some(())
            })?,
            _ => {}
        }
        Some(())
    })?;
    Some(t)
}

/// A `LeaseGrantResponse`: the lease id (`None` when etcd refused, with its error).
pub(crate) fn lease_grant_response(bytes: &[u8]) -> Option<Result<i64, String>> {
    let (mut id, mut error) = (0, String::new());
    walk(bytes, |f| {
        match f {
            Field::Int(2, v) => id = signed(v),
            Field::Bytes(4, e) => error = String::from_utf8_lossy(e).into_owned(),
            _ => {}
        }
        Some(())
    })?;
    Some(if error.is_empty() && id != 0 {
        Ok(id)
    } else {
        Err(error)
    })
}

/// One `mvccpb.Event`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Put(KeyValue),
    Delete(KeyValue),
}

/// A `WatchResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct WatchResponse {
    pub revision: i64,
    pub created: bool,
    pub canceled: bool,
    /// Set when the watch was canceled because its start revision was compacted away: the
    /// watcher must read everything again.
    pub compact_revision: i64,
    pub cancel_reason: String,
    pub events: Vec<Event>,
}

pub(crate) fn watch_response(bytes: &[u8]) -> Option<WatchResponse> {
    let mut w = WatchResponse::default();
    walk(bytes, |f| {
        match f {
            Field::Bytes(1, h) => w.revision = header_revision(h)?,
            Field::Int(3, v) => w.created = v != 0,
            Field::Int(4, v) => w.canceled = v != 0,
            Field::Int(5, v) => w.compact_revision = signed(v),
            Field::Bytes(6, r) => w.cancel_reason = String::from_utf8_lossy(r).into_owned(),
            Field::Bytes(11, e) => {
                let (mut delete, mut kv) = (false, None);
                walk(e, |f| {
                    match f {
                        Field::Int(1, t) => delete = t == 1,
                        Field::Bytes(2, b) => kv = Some(key_value(b)?),
                        _ => {}
                    }
                    Some(())
                })?;
                let kv = kv?;
                w.events.push(if delete {
                    Event::Delete(kv)
                } else {
                    Event::Put(kv)
                });
            }
            _ => {}
        }
        Some(())
    })?;
    Some(w)
}

/// `envoy.config.core.v3.GrpcService { envoy_grpc: { cluster_name } }`, serialized: what
/// proxy-wasm's `grpc_call` / `grpc_stream` take as the upstream (Envoy also accepts a bare
/// cluster name, but only when the name does not happen to parse as this message).
pub(crate) fn grpc_service(cluster: &str) -> Vec<u8> {
    Msg::default()
        .msg(1, Msg::default().bytes(1, cluster.as_bytes()))
        .finish()
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a failed unwrap or index is a failed test"
    )]

    use super::*;

    #[test]
    fn varints_and_negative_ints_round_trip() {
        for v in [0i64, 1, 127, 128, 300, i64::MAX, -1, i64::MIN] {
            let bytes = Msg::default().int(3, v).finish();
            let mut got = 0;
            walk(&bytes, |f| {
                if let Field::Int(3, x) = f {
                    got = signed(x);
                }
                Some(())
            })
            .unwrap();
            assert_eq!(got, v);
        }
    }

    /// The bytes of a request as etcd's own client writes them (checked against
    /// `etcdctl --debug` style encodings of the same fields, by hand).
    #[test]
    fn requests_have_etcds_field_numbers() {
        assert_eq!(range(b"k", None).finish(), b"\x0a\x01k");
        assert_eq!(
            watch_create(b"a", b"b", 5).finish(),
            b"\x0a\x08\x0a\x01a\x12\x01b\x18\x05"
        );
        assert_eq!(prefix_end(b"/p/"), b"/p0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(grpc_service("etcd"), b"\x0a\x06\x0a\x04etcd");
        // compare: target MOD (2), key, mod_revision (field 6) 7
        let t = txn_put(b"k", Compare::ModRevision(7), b"v", 0).finish();
        assert!(t.starts_with(b"\x0a\x07\x10\x02\x1a\x01k\x30\x07"), "{t:?}");
        // A read-only compare: no success branch, a range on failure; revision 0 is absent.
        let probe = txn_at(b"k", 0, None, 0).finish();
        assert_eq!(probe, b"\x0a\x05\x10\x02\x1a\x01k\x1a\x05\x0a\x03\x0a\x01k");
        let with_put = txn_at(b"k", 7, Some(b"v"), 0).finish();
        assert_eq!(
            with_put,
            [
                &b"\x0a\x07\x10\x02\x1a\x01k\x30\x07"[..],
                b"\x12\x08\x12\x06\x0a\x01k\x12\x01v",
                b"\x1a\x05\x0a\x03\x0a\x01k",
            ]
            .concat()
        );
    }

    fn kv(key: &[u8], rev: i64, value: &[u8]) -> Msg {
        Msg::default().bytes(1, key).int(3, rev).bytes(5, value)
    }

    #[test]
    fn responses_decode() {
        let header = Msg::default().int(3, 42);
        let r = Msg::default()
            .msg(1, header)
            .msg(2, kv(b"a", 3, b"x"))
            .msg(2, kv(b"b", 4, b"y"))
            .finish();
        let r = range_response(&r).unwrap();
        assert_eq!(r.revision, 42);
        assert_eq!(r.kvs.len(), 2);
        assert_eq!(r.kvs[1].value, b"y");

        let failed = Msg::default()
            .msg(1, Msg::default().int(3, 9))
            .msg(
                3,
                Msg::default().msg(1, Msg::default().msg(2, kv(b"k", 8, b"now"))),
            )
            .finish();
        let t = txn_response(&failed).unwrap();
        assert!(!t.succeeded);
        assert_eq!(t.current.unwrap().mod_revision, 8);

        let ev = Msg::default().int(1, 1).msg(2, kv(b"k", 10, b""));
        let w = Msg::default()
            .msg(1, Msg::default().int(3, 10))
            .msg(11, ev)
            .msg(11, Msg::default().msg(2, kv(b"j", 10, b"v")))
            .finish();
        let w = watch_response(&w).unwrap();
        assert!(matches!(&w.events[0], Event::Delete(k) if k.key == b"k"));
        assert!(matches!(&w.events[1], Event::Put(k) if k.value == b"v"));

        assert_eq!(
            lease_grant_response(&Msg::default().int(2, 77).int(3, 60).finish()),
            Some(Ok(77))
        );
    }

    #[test]
    fn malformed_bytes_decode_to_none_without_panicking() {
        for bad in [
            &b"\x0a\x05ab"[..],
            b"\x0a",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x0b",
            b"\x09\x01",
        ] {
            assert_eq!(range_response(bad), None, "{bad:?}");
            assert_eq!(watch_response(bad), None, "{bad:?}");
            assert_eq!(txn_response(bad), None, "{bad:?}");
        }
        // Every prefix of a valid message either decodes or is refused, never panics.
        let w = Msg::default()
            .msg(1, Msg::default().int(3, 10))
            .msg(11, Msg::default().msg(2, kv(b"j", 10, b"v")))
            .finish();
        for n in 0..w.len() {
            let _ = watch_response(&w[..n]);
        }
    }
}
