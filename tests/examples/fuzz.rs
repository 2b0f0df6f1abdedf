//! A fuzzer for the parsers a user controls, on stable Rust: a seeded mutation loop (xorshift,
//! no coverage feedback, only a little output feedback: an input that gives an outcome not seen
//! before joins the pool) over real inputs, structure-aware for JSON, GGUF and safetensors and
//! byte-level on top.
//!
//! ```text
//! fuzz <target> [--iterations N] [--seed S] [--corpus DIR] [--hang-ms MS] [--crash-dir DIR]
//!               [--max-seconds S]
//! fuzz <target> --replay FILE [--repeat N]   run one saved input (with the default panic
//!                                            hook), N times to see whether the heap grows
//! fuzz write-seeds [DIR]          write the generated seeds (the committed tests/fuzz-corpus)
//! ```
//!
//! Targets: `config` (config.json through the registry and every architecture's args),
//! `safetensors` (`checkpoint::parse_safetensors`, and now and then the file readers),
//! `gguf` (`gguf::header::scan_bytes`; what passes is opened with `GgufCheckpoint::open` and its
//! config, EOS ids and tokenizer are read from the metadata), `tokenizer`
//! (`Tokenizer::from_dir` on a folder of mutated tokenizer.json / tokenizer_config.json /
//! config files, then encode, decode, stream and the chat template), `chat-template`
//! (`ChatTemplate::select`, a tokenizer with a mutated template, `apply_chat_template*` with
//! mutated messages, tools and variables), and `all`.
//!
//! Every input runs under `catch_unwind`: a panic is a crash. An input that takes longer than
//! `--hang-ms` (default 1000) is a hang; one still running after 20 s stops the run. A counting
//! global allocator flags any single allocation over 1 GiB and any input whose live heap grows
//! by more than 1 GiB. Each failing input is saved under `target/fuzz-crashes/` as
//! `<target>-<iteration>.bin` (the first three of each kind); a fatal signal (an abort on a failed
//! allocation, a stack overflow, a fault in C++ code) saves the input being run as
//! `<target>-fatal.bin` before the process dies. One summary line per target:
//! `fuzz <target>: N inputs, K crashes, H hangs, peak allocation X MB, T s` (the peak: the most
//! that one input's run had allocated at once), then details (largest single allocation, slowest
//! input, how many inputs reached each stage of the parser). Exit status 1 when anything failed.
//!
//! Bugs found here that cannot be fixed in this project are listed as known issues
//! (`known_template_issue`: minijinja's unbounded sequence repetition): inputs that would only
//! hit them again are counted and skipped, so that a run goes on finding others; remove an
//! entry once its bug is fixed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::CString;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mlx_models::chat_template::{ChatMessage, ChatTemplate};
use mlx_models::checkpoint::{self, LoadStrategy};
use mlx_models::gguf::{header, GgufCheckpoint};
use mlx_models::registry;
use mlx_models::tokenizer::{ChatOptions, Tokenizer};
use serde_json::{json, Map, Number, Value};

// =============================================================================================
// Memory: a counting allocator
// =============================================================================================

/// The largest single allocation (and the largest growth of the live heap during one input)
/// that is not a failure.
const ALLOC_CAP: usize = 1 << 30;

/// A single allocation this large is not a failure, but its input is kept for a look.
const NOTABLE_ALLOC: usize = 64 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Peak of `LIVE` since the current target started.
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Peak of `LIVE` since the current input started.
static INPUT_PEAK: AtomicUsize = AtomicUsize::new(0);
/// The largest single request since the current target started.
static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// The largest request during the current input.
static INPUT_LARGEST: AtomicUsize = AtomicUsize::new(0);
/// The largest request over `ALLOC_CAP` during the current input (0: none).
static OVERSIZED: AtomicUsize = AtomicUsize::new(0);

struct Counting;

fn note_request(size: usize) {
    LARGEST.fetch_max(size, Ordering::Relaxed);
    INPUT_LARGEST.fetch_max(size, Ordering::Relaxed);
    if size > ALLOC_CAP {
        OVERSIZED.fetch_max(size, Ordering::Relaxed);
    }
}

fn note_grow(size: usize) {
    let now = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
    INPUT_PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System`; the counters are atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_request(layout.size());
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note_grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_request(layout.size());
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note_grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_request(new_size);
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            note_grow(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// =============================================================================================
// The input being run, for the watchdog and the fatal-signal handler
// =============================================================================================

static CUR_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static CUR_LEN: AtomicUsize = AtomicUsize::new(0);
static CUR_ITER: AtomicU64 = AtomicU64::new(0);
/// Milliseconds since `EPOCH` at which the current input started; 0 when none runs.
static CUR_START_MS: AtomicU64 = AtomicU64::new(0);
/// `<crash dir>/<target>-fatal.bin`, NUL-terminated, leaked.
static FATAL_PATH: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());
/// The target's name, NUL-terminated, leaked.
static TARGET_NAME: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());
/// Held by the watchdog while it reads the current input, and taken by the loop before it
/// frees one.
static INPUT_LOCK: Mutex<()> = Mutex::new(());
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
static HANG_ABORT_MS: AtomicU64 = AtomicU64::new(20_000);

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

const FATAL_SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGABRT,
    libc::SIGILL,
    libc::SIGFPE,
];
static mut OLD_ACTIONS: [std::mem::MaybeUninit<libc::sigaction>; 5] =
    [const { std::mem::MaybeUninit::uninit() }; 5];

fn write_fd(fd: libc::c_int, bytes: &[u8]) {
    let mut done = 0;
    while done < bytes.len() {
        // SAFETY: a plain write of a live buffer.
        let n = unsafe { libc::write(fd, bytes[done..].as_ptr().cast(), bytes.len() - done) };
        if n <= 0 {
            return;
        }
        done += n as usize;
    }
}

fn write_cstr(fd: libc::c_int, p: *const libc::c_char) {
    if p.is_null() {
        return;
    }
    // SAFETY: `p` is a leaked, NUL-terminated CString.
    let s = unsafe { std::ffi::CStr::from_ptr(p) };
    write_fd(fd, s.to_bytes());
}

fn write_u64(fd: libc::c_int, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    write_fd(fd, &buf[i..]);
}

/// Saves the input being run and says so on stderr, then puts back the handler that was there
/// (Rust's stack-overflow report, or the default) and returns, so that the signal strikes again
/// and ends the process as it would have. Only async-signal-safe calls.
extern "C" fn on_fatal_signal(sig: libc::c_int) {
    let path = FATAL_PATH.load(Ordering::SeqCst);
    let ptr = CUR_PTR.load(Ordering::SeqCst);
    let len = CUR_LEN.load(Ordering::SeqCst);
    write_fd(2, b"\nfuzz ");
    write_cstr(2, TARGET_NAME.load(Ordering::SeqCst));
    write_fd(2, b": fatal signal ");
    write_u64(2, sig as u64);
    write_fd(2, b" at iteration ");
    write_u64(2, CUR_ITER.load(Ordering::SeqCst));
    let big = OVERSIZED.load(Ordering::SeqCst);
    if big > 0 {
        write_fd(2, b" (after a request of ");
        write_u64(2, big as u64);
        write_fd(2, b" bytes)");
    }
    if !path.is_null() && !ptr.is_null() {
        // SAFETY: plain libc calls on a NUL-terminated path and the live input buffer.
        unsafe {
            let fd = libc::open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644);
            if fd >= 0 {
                write_fd(fd, std::slice::from_raw_parts(ptr, len));
                libc::close(fd);
                write_fd(2, b"; input saved to ");
                write_cstr(2, path);
            }
        }
    }
    write_fd(2, b"\n");
    if let Some(i) = FATAL_SIGNALS.iter().position(|&s| s == sig) {
        // SAFETY: OLD_ACTIONS[i] was filled by `install_signal_handlers` before this handler.
        unsafe {
            let old = std::ptr::addr_of!(OLD_ACTIONS[i]).cast::<libc::sigaction>();
            libc::sigaction(sig, old, std::ptr::null_mut());
        }
    }
}

fn install_signal_handlers() {
    for (i, &sig) in FATAL_SIGNALS.iter().enumerate() {
        // SAFETY: a handler that only makes async-signal-safe calls, on the alternate stack
        // (which Rust sets up for its threads) so that a stack overflow still reaches it.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fatal_signal as *const () as usize;
            action.sa_flags = libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let old = std::ptr::addr_of_mut!(OLD_ACTIONS[i]).cast::<libc::sigaction>();
            libc::sigaction(sig, &action, old);
        }
    }
}

/// Stops the run when one input runs for longer than `HANG_ABORT_MS`: saves it, says so, exits.
fn spawn_watchdog() {
    std::thread::spawn(|| loop {
        std::thread::sleep(Duration::from_millis(200));
        let start = CUR_START_MS.load(Ordering::SeqCst);
        if start == 0 || now_ms().saturating_sub(start) < HANG_ABORT_MS.load(Ordering::SeqCst) {
            continue;
        }
        let _guard = INPUT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if CUR_START_MS.load(Ordering::SeqCst) != start {
            continue;
        }
        let ptr = CUR_PTR.load(Ordering::SeqCst);
        let len = CUR_LEN.load(Ordering::SeqCst);
        // SAFETY: the loop does not free the input while this lock is held.
        let input = unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec();
        let path = FATAL_PATH.load(Ordering::SeqCst);
        // SAFETY: a leaked CString.
        let path = unsafe { std::ffi::CStr::from_ptr(path) }
            .to_string_lossy()
            .replace("-fatal.bin", "-hang.bin");
        let _ = std::fs::write(&path, &input);
        eprintln!(
            "\nfuzz: an input has run for more than {} ms at iteration {} (a hang); saved to {path}",
            HANG_ABORT_MS.load(Ordering::SeqCst),
            CUR_ITER.load(Ordering::SeqCst)
        );
        // SAFETY: ends the process at once, without running exit handlers that might wait for
        // the stuck thread.
        unsafe { libc::_exit(1) };
    });
}

// =============================================================================================
// Randomness
// =============================================================================================

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut r = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
        if r.0 == 0 {
            r.0 = 1;
        }
        for _ in 0..4 {
            r.next();
        }
        r
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    /// True with probability 1/n.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

// =============================================================================================
// Mutations: bytes
// =============================================================================================

const INTERESTING_U64: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    9,
    15,
    16,
    31,
    32,
    33,
    63,
    64,
    127,
    128,
    255,
    256,
    1023,
    1024,
    4095,
    4096,
    65535,
    65536,
    100_000_000,
    100_000_001,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    1 << 40,
    1 << 48,
    1 << 53,
    1 << 62,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX - 7,
    u64::MAX,
];

fn interesting_u64(rng: &mut Rng, len_hint: usize) -> u64 {
    match rng.below(8) {
        0 => len_hint as u64,
        1 => (len_hint as u64).wrapping_sub(rng.below(16) as u64),
        2 => (len_hint as u64).wrapping_add(rng.below(16) as u64),
        3 => rng.next(),
        _ => *rng.pick(INTERESTING_U64),
    }
}

/// Applies 1 to 4 byte-level mutations; `pool` is for splicing, `tokens` for inserting words.
fn mutate_bytes(data: &mut Vec<u8>, rng: &mut Rng, pool: &[Vec<u8>], tokens: &[&[u8]]) {
    for _ in 0..rng.range(1, 4) {
        let len = data.len();
        match rng.below(13) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = *rng.pick(&[
                    0u8, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'}', b'[', b'\\', 0xc3,
                ]);
            }
            2 if len >= 4 => {
                let i = rng.below(len - 3);
                let v = interesting_u64(rng, len) as u32;
                data[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            3 if len >= 8 => {
                let i = rng.below(len - 7);
                let v = interesting_u64(rng, len);
                data[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            4 => {
                let i = rng.below(len + 1);
                let n = rng.range(1, 16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(i..i, bytes);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = rng.range(1, (len - i).min(64));
                data.drain(i..i + n);
            }
            6 if len > 0 => {
                let i = rng.below(len);
                let n = rng.range(1, (len - i).min(256));
                let chunk = data[i..i + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            7 if len > 0 => {
                let n = rng.below(len);
                data.truncate(n);
            }
            8 if !pool.is_empty() => {
                let other = rng.pick(pool);
                if !other.is_empty() {
                    let i = rng.below(other.len());
                    let n = rng.range(1, (other.len() - i).min(512));
                    let at = rng.below(len + 1);
                    let end = (at + rng.below(n + 1)).min(len);
                    data.splice(at..end, other[i..i + n].iter().copied());
                }
            }
            9 if !tokens.is_empty() => {
                let t = rng.pick(tokens);
                let at = rng.below(len + 1);
                data.splice(at..at, t.iter().copied());
            }
            10 if len > 0 => {
                let i = rng.below(len);
                let n = rng.range(1, (len - i).min(8));
                let b = data[i];
                data.splice(i..i, std::iter::repeat_n(b, n * rng.range(1, 64)));
            }
            11 if len > 1 => {
                let (a, b) = (rng.below(len), rng.below(len));
                data.swap(a, b);
            }
            _ => {
                let at = rng.below(len + 1);
                let b = rng.next() as u8;
                data.insert(at, b);
            }
        }
    }
}

// =============================================================================================
// Mutations: JSON
// =============================================================================================

/// What the JSON mutator draws from: keys and strings seen in the seeds (and added by hand),
/// and subtrees of the seeds for splicing.
#[derive(Default)]
struct Dict {
    keys: Vec<String>,
    strings: Vec<String>,
    subtrees: Vec<Value>,
}

impl Dict {
    fn learn(&mut self, v: &Value) {
        let mut keys: BTreeSet<String> = self.keys.iter().cloned().collect();
        let mut strings: BTreeSet<String> = self.strings.iter().cloned().collect();
        fn walk(
            v: &Value,
            keys: &mut BTreeSet<String>,
            strings: &mut BTreeSet<String>,
            subtrees: &mut Vec<Value>,
            depth: usize,
        ) {
            match v {
                Value::Object(m) => {
                    for (k, x) in m {
                        keys.insert(k.clone());
                        if depth > 0 && subtrees.len() < 4000 && x.to_string().len() < 2000 {
                            subtrees.push(x.clone());
                        }
                        walk(x, keys, strings, subtrees, depth + 1);
                    }
                }
                Value::Array(a) => {
                    for x in a.iter().take(64) {
                        walk(x, keys, strings, subtrees, depth + 1);
                    }
                }
                Value::String(s) if s.len() < 200 && strings.len() < 4000 => {
                    strings.insert(s.clone());
                }
                _ => {}
            }
        }
        walk(v, &mut keys, &mut strings, &mut self.subtrees, 0);
        self.keys = keys.into_iter().collect();
        self.strings = strings.into_iter().collect();
    }

    fn add_strings(&mut self, words: &[&str]) {
        for w in words {
            if !self.strings.iter().any(|s| s == w) {
                self.strings.push((*w).to_string());
            }
        }
    }

    fn add_keys(&mut self, words: &[&str]) {
        for w in words {
            if !self.keys.iter().any(|s| s == w) {
                self.keys.push((*w).to_string());
            }
        }
    }
}

fn tagged(s: &str) -> Value {
    json!({ "__float__": s })
}

fn interesting_number(rng: &mut Rng) -> Value {
    let f = |x: f64| Value::Number(Number::from_f64(x).expect("finite"));
    match rng.below(34) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(1),
        3 => json!(2),
        4 => json!(3),
        5 => json!(i32::MAX),
        6 => json!(i32::MAX as u64 + 1),
        7 => json!(u32::MAX),
        8 => json!(u32::MAX as u64 + 1),
        9 => json!(i64::MAX),
        10 => json!(1u64 << 63),
        11 => json!(u64::MAX),
        12 => json!(i64::MIN),
        13 => json!(i32::MIN),
        14 => f(1e308),
        15 => f(-1e308),
        16 => f(1e-308),
        17 => f(5e-324),
        18 => f(0.5),
        19 => f(-0.0),
        20 => f(1e39),
        21 => f(3.4028235e38),
        22 => f(1e-46),
        23 => f(1e-40),
        24 => f(65504.5),
        25 => tagged("NaN"),
        26 => tagged("Infinity"),
        27 => tagged("-Infinity"),
        28 => {
            let s: &str = *rng.pick(&["nan", "inf", "-inf", "1.5", "", "Inf"][..]);
            tagged(s)
        }
        29 => f(2147483647.5),
        30 => json!(1u64 << 53),
        31 => f(9007199254740993.0),
        32 => json!(rng.next() as i64),
        _ => json!(rng.below(100_000)),
    }
}

fn random_text(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "a",
        "Z",
        " ",
        "\n",
        "\t",
        "\0",
        "é",
        "世",
        "🎉",
        "\u{fffd}",
        "\u{200b}",
        "▁",
        "Ġ",
        "<s>",
        "</s>",
        "<unk>",
        "<|im_start|>",
        "<|eot|>",
        "<think>",
        "{{",
        "}}",
        "{%",
        "%}",
        "\\",
        "\"",
        "0",
        "9",
        ".",
        "-",
        "_",
        "##",
        "\u{10ffff}",
        "\u{301}",
    ];
    let n = rng.range(0, 12);
    (0..n).map(|_| *rng.pick(PIECES)).collect()
}

fn interesting_string(rng: &mut Rng, dict: &Dict) -> Value {
    let s = match rng.below(10) {
        0 => String::new(),
        1 => "x".repeat(*rng.pick(&[255usize, 256, 4096, 65536, 300_000])),
        2 => random_text(rng),
        3 => rng
            .pick(&["0", "-1", "1e5", "NaN", "true", "null", "Infinity"])
            .to_string(),
        4 if !dict.keys.is_empty() => rng.pick(&dict.keys).clone(),
        _ if !dict.strings.is_empty() => {
            let mut s = rng.pick(&dict.strings).clone();
            if rng.one_in(3) {
                s = tweak_string(&s, rng);
            }
            s
        }
        _ => random_text(rng),
    };
    Value::String(s)
}

/// An edit of a string: a typo, a case change, a cut, a doubling.
fn tweak_string(s: &str, rng: &mut Rng) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    match rng.below(6) {
        0 if !chars.is_empty() => {
            chars.remove(rng.below(chars.len()));
        }
        1 => {
            let c = *rng.pick(&['_', 'a', 's', '.', ' ', 'é', '\0']);
            chars.insert(rng.below(chars.len() + 1), c);
        }
        2 if chars.len() > 1 => {
            let i = rng.below(chars.len() - 1);
            chars.swap(i, i + 1);
        }
        3 => return s.to_uppercase(),
        4 => return format!("{s}{s}"),
        _ => chars.truncate(rng.below(chars.len() + 1)),
    }
    chars.into_iter().collect()
}

fn random_value(rng: &mut Rng, dict: &Dict, depth: usize) -> Value {
    match rng.below(if depth > 3 { 6 } else { 9 }) {
        0 | 1 => interesting_number(rng),
        2 | 3 => interesting_string(rng, dict),
        4 => json!(null),
        5 => json!(rng.one_in(2)),
        6 if !dict.subtrees.is_empty() => rng.pick(&dict.subtrees).clone(),
        7 => Value::Array(
            (0..rng.range(0, 4))
                .map(|_| random_value(rng, dict, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.range(0, 3) {
                let k = if dict.keys.is_empty() {
                    "k".to_string()
                } else {
                    rng.pick(&dict.keys).clone()
                };
                m.insert(k, random_value(rng, dict, depth + 1));
            }
            Value::Object(m)
        }
    }
}

fn escape_pointer(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// JSON pointers of the nodes of `v` (at most `limit`), root first.
fn node_paths(v: &Value, limit: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut stack = vec![(String::new(), v)];
    while let Some((p, v)) = stack.pop() {
        if out.len() >= limit {
            break;
        }
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let q = format!("{p}/{}", escape_pointer(k));
                    out.push(q.clone());
                    stack.push((q, x));
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let q = format!("{p}/{i}");
                    out.push(q.clone());
                    stack.push((q, x));
                }
            }
            _ => {}
        }
    }
    out
}

/// One structure-aware edit at a random node of `v`.
fn mutate_json_once(v: &mut Value, rng: &mut Rng, dict: &Dict) {
    let paths = node_paths(v, 5000);
    // Leaves and small containers are picked more often than the root.
    let path = rng.pick(&paths).clone();
    let Some(node) = v.pointer_mut(&path) else {
        return;
    };
    match rng.below(16) {
        0 | 1 => *node = interesting_number(rng),
        2 => *node = interesting_string(rng, dict),
        3 => {
            *node = rng
                .pick(&[
                    json!(null),
                    json!(true),
                    json!(false),
                    json!([]),
                    json!({}),
                    json!(""),
                ])
                .clone()
        }
        4 => {
            let inner = node.take();
            *node = match rng.below(3) {
                0 => json!([inner]),
                1 => json!({ "value": inner }),
                _ => {
                    // Deep nesting, around serde_json's limit of 128.
                    let depth = *rng.pick(&[8usize, 64, 126, 127, 128, 129, 200]);
                    let mut x = inner;
                    for _ in 0..depth {
                        x = if rng.one_in(2) {
                            json!([x])
                        } else {
                            json!({ "a": x })
                        };
                    }
                    x
                }
            };
        }
        5 if !dict.subtrees.is_empty() => *node = rng.pick(&dict.subtrees).clone(),
        6 => *node = random_value(rng, dict, 0),
        7 | 8 | 9 => match node {
            Value::Object(m) => match rng.below(5) {
                0 if !m.is_empty() => {
                    let k = m
                        .keys()
                        .nth(rng.below(m.len()))
                        .cloned()
                        .unwrap_or_default();
                    m.remove(&k);
                }
                1 if !m.is_empty() => {
                    // Rename a key (a typo, or another known key).
                    let k = m
                        .keys()
                        .nth(rng.below(m.len()))
                        .cloned()
                        .unwrap_or_default();
                    if let Some(x) = m.remove(&k) {
                        let new = if rng.one_in(2) || dict.keys.is_empty() {
                            tweak_string(&k, rng)
                        } else {
                            rng.pick(&dict.keys).clone()
                        };
                        m.insert(new, x);
                    }
                }
                2 if !m.is_empty() => {
                    // Copy a sibling's value under another key.
                    let x = m
                        .values()
                        .nth(rng.below(m.len()))
                        .cloned()
                        .unwrap_or_default();
                    let k = if dict.keys.is_empty() {
                        "k".to_string()
                    } else {
                        rng.pick(&dict.keys).clone()
                    };
                    m.insert(k, x);
                }
                _ => {
                    let k = if dict.keys.is_empty() || rng.one_in(8) {
                        tweak_string("key", rng)
                    } else {
                        rng.pick(&dict.keys).clone()
                    };
                    m.insert(k, random_value(rng, dict, 1));
                }
            },
            Value::Array(a) => match rng.below(7) {
                0 if !a.is_empty() => {
                    a.remove(rng.below(a.len()));
                }
                1 if !a.is_empty() => {
                    let x = a[rng.below(a.len())].clone();
                    a.insert(rng.below(a.len() + 1), x);
                }
                2 => a.clear(),
                3 if !a.is_empty() => {
                    let x = a[rng.below(a.len())].clone();
                    // Many copies, up to about 128 KB of text.
                    let size = x.to_string().len().max(1);
                    let n = (*rng.pick(&[100usize, 1000, 5000])).min((128 << 10) / size);
                    a.extend(std::iter::repeat_n(x, n));
                }
                4 => a.reverse(),
                5 if !a.is_empty() => {
                    let n = rng.below(a.len());
                    a.truncate(n);
                }
                _ => a.push(random_value(rng, dict, 1)),
            },
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(0.0);
                *node = match rng.below(7) {
                    0 => json!(n.as_i64().map_or(1, |i| i.wrapping_add(1))),
                    1 => json!(n.as_i64().map_or(-1, |i| i.wrapping_sub(1))),
                    2 => json!(n.as_i64().map_or(0, |i| i.wrapping_neg())),
                    3 => Number::from_f64(x + 0.5).map_or(json!(0), Value::Number),
                    4 => Number::from_f64(x * 1e30).map_or(json!(0), Value::Number),
                    5 => Value::String(n.to_string()),
                    _ => json!(n.as_i64().map_or(0, |i| i.wrapping_mul(1 << 20))),
                };
            }
            Value::String(s) => *node = Value::String(tweak_string(s, rng)),
            Value::Bool(b) => *node = if rng.one_in(2) { json!(!*b) } else { json!(1) },
            Value::Null => *node = random_value(rng, dict, 1),
        },
        _ => match node {
            Value::Number(_) => *node = interesting_number(rng),
            Value::String(_) => *node = interesting_string(rng, dict),
            _ => *node = random_value(rng, dict, 1),
        },
    }
}

fn mutate_json(v: &mut Value, rng: &mut Rng, dict: &Dict) {
    for _ in 0..rng.range(1, 5) {
        mutate_json_once(v, rng, dict);
    }
}

/// Writes JSON, now and then with an object entry twice (which a `Value` cannot hold but a file
/// can) when `dup` is set.
fn write_json(v: &Value, out: &mut String, rng: &mut Rng, dup: bool, pretty: bool, level: usize) {
    let nl = |out: &mut String, level: usize| {
        if pretty {
            out.push('\n');
            for _ in 0..level {
                out.push_str("  ");
            }
        }
    };
    match v {
        Value::Object(m) => {
            out.push('{');
            let mut first = true;
            for (k, x) in m {
                let times = if dup && rng.one_in(8) { 2 } else { 1 };
                for t in 0..times {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    nl(out, level + 1);
                    out.push_str(&serde_json::to_string(k).unwrap_or_default());
                    out.push(':');
                    if pretty {
                        out.push(' ');
                    }
                    if t == 1 && rng.one_in(2) {
                        let other = interesting_number(rng);
                        out.push_str(&other.to_string());
                    } else {
                        write_json(x, out, rng, dup, pretty, level + 1);
                    }
                }
            }
            if !m.is_empty() {
                nl(out, level);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(x, out, rng, dup, pretty, level + 1);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Words that text-level JSON mutations insert.
const JSON_TOKENS: &[&[u8]] = &[
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"2147483648",
    b"01",
    b"-0",
    b"0x10",
    b"\"\\ud800\"",
    b"\"\\u0000\"",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b",",
    b":",
    b"\"",
    b"{\"__float__\": \"NaN\"}",
];

/// A JSON input from a seed value: structure-aware edits, written (perhaps pretty, perhaps with
/// duplicated keys), then perhaps byte-level edits of the text.
fn json_input(seed: &Value, rng: &mut Rng, dict: &Dict, pool: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seed.clone();
    if !rng.one_in(8) {
        mutate_json(&mut v, rng, dict);
    }
    let mut text = String::new();
    let dup = rng.one_in(10);
    let pretty = rng.one_in(4);
    write_json(&v, &mut text, rng, dup, pretty, 0);
    if text.len() > MAX_INPUT {
        // Stacked edits (copies of copies) can grow a file without end: start over.
        text = serde_json::to_string(seed).unwrap_or_default();
    }
    let mut bytes = text.into_bytes();
    if rng.one_in(5) {
        mutate_bytes(&mut bytes, rng, pool, JSON_TOKENS);
    }
    bytes
}

/// The largest JSON file the mutations make (larger ones are no more interesting, only slower).
const MAX_INPUT: usize = 256 << 10;

/// The largest input kept in a pool for further mutation.
const MAX_KEPT: usize = 64 << 10;

// =============================================================================================
// Inputs made of several files
// =============================================================================================

/// `FZ1\n`, then per file: name length (u8), name, data length (u32 LE), data.
fn pack(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"FZ1\n".to_vec();
    for (name, data) in files {
        out.push(name.len() as u8);
        out.extend(name.as_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
    }
    out
}

fn unpack(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut rest = bytes.strip_prefix(b"FZ1\n")?;
    let mut files = Vec::new();
    while !rest.is_empty() {
        let n = *rest.first()? as usize;
        let name = std::str::from_utf8(rest.get(1..1 + n)?).ok()?.to_string();
        rest = &rest[1 + n..];
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let data = rest.get(4..4 + len)?.to_vec();
        rest = &rest[4 + len..];
        files.push((name, data));
    }
    Some(files)
}

fn file<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    files
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| d.as_slice())
}

// =============================================================================================
// Targets
// =============================================================================================

/// How many inputs reached each stage of a target, in the order the stages were first met.
#[derive(Default)]
struct Stats(Vec<(&'static str, u64)>);

impl Stats {
    fn bump(&mut self, stage: &'static str) {
        match self.0.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, n)) => *n += 1,
            None => self.0.push((stage, 1)),
        }
    }
    fn show(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(s, n)| format!("{n} {s}")).collect();
        parts.join(", ")
    }
}

trait Target {
    /// Loads the seeds (built in, then from the corpus folder).
    fn seed(&mut self, corpus: &Path);
    /// The seeds, as files, for `write-seeds`.
    fn seed_files(&self) -> Vec<(String, Vec<u8>)>;
    /// A new input.
    fn generate(&mut self, rng: &mut Rng) -> Vec<u8>;
    /// Runs one input; returns a short description of the outcome (for the pool's feedback).
    fn run(&mut self, input: &[u8]) -> String;
    /// Adds an input whose outcome was new to the pool.
    fn keep(&mut self, input: &[u8]);
    /// How far the inputs got, for the summary.
    fn details(&self) -> String;
}

/// An outcome with its numbers and quoted parts blurred, so that one kind of error is one
/// outcome.
fn outcome(s: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    let mut last_digit = false;
    for c in s.chars().take(160) {
        if c == '`' || c == '"' {
            quoted = !quoted;
            out.push('`');
            continue;
        }
        if quoted {
            continue;
        }
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('#');
            }
            last_digit = true;
        } else {
            last_digit = false;
            out.push(c);
        }
    }
    out
}

/// The outcome of an input skipped for a known issue (see [`known_template_issue`]).
const KNOWN_ISSUE: &str = "known issue, skipped: ";

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(ext))
        .collect();
    out.sort();
    out
}

/// Every `name` under `dir`, recursively, sorted.
fn find_named(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            find_named(&p, name, out);
        } else if p.file_name().is_some_and(|n| n == name) {
            out.push(p);
        }
    }
}

fn remove_scratch_dir(target: &str) {
    let _ = std::fs::remove_dir_all(scratch_path(target));
}

/// Where [`scratch_dir`] puts a target's folder.
fn scratch_path(target: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("mlx-models-fuzz-{}-{target}", std::process::id()))
}

/// A scratch folder in memory (`/dev/shm` when there is one) for the parsers that read files.
fn scratch_dir(target: &str) -> PathBuf {
    let dir = scratch_path(target);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

// ---------------------------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------------------------

/// One architecture's args parser, by the registry's key.
struct Arch {
    model_type: &'static str,
    architectures: &'static [&'static str],
    /// Its registry entry, which parses the args.
    entry: &'static registry::Entry,
}

/// The unknown keys of a config as the paths of their leaves: `{"a": {"b": 1}}` unknown as a
/// whole or as `a.b` is the same unknown content (a dotted alias that consumed part of an object
/// splits it; once written back without that part, it is whole again).
fn unknown_leaves(c: &registry::ParsedArgs) -> Vec<String> {
    fn walk(key: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    walk(&format!("{key}.{k}"), x, out);
                }
            }
            _ => out.push(key.to_string()),
        }
    }
    let mut out = Vec::new();
    for u in &c.unknown_keys {
        walk(&u.key, &u.value, &mut out);
    }
    out.sort();
    out
}

/// Parses with one architecture's args; when it parses, the documented round trip must hold:
/// `to_json` parses again to the same args and the same unknown keys.
fn parse_args(arch: &Arch, v: &Value, round_trip: bool) -> Result<String, String> {
    let parse = arch.entry.parse;
    match parse(v) {
        Ok(c) if !round_trip => Ok(format!("ok {}", c.unknown_keys.len().min(3))),
        Ok(c) => {
            // As a value: through text, serde_json's default float parsing may move a raw
            // `Value` float by one ulp, which is not the parser's doing.
            let text = serde_json::to_string(&c.written).expect("to_json writes JSON");
            let c2 = parse(&c.written).unwrap_or_else(|e| {
                panic!("round trip: to_json does not parse again: {e}\n{text}")
            });
            assert_eq!(c2.args, c.args, "round trip: other args after to_json");
            assert_eq!(
                unknown_leaves(&c2),
                unknown_leaves(&c),
                "round trip: other unknown keys after to_json"
            );
            let _ = c.typos.iter().map(|t| t.to_string()).count();
            Ok(format!("ok {}", c.unknown_keys.len().min(3)))
        }
        Err(e) => Err(e.to_string()),
    }
}

struct ConfigTarget {
    archs: Vec<Arch>,
    names: Vec<&'static str>,
    seeds: Vec<(String, Value)>,
    pool: Vec<Vec<u8>>,
    dict: Dict,
    stats: Stats,
}

impl ConfigTarget {
    fn new() -> Result<Self, String> {
        mlx_models_zoo::link();
        // Every registered architecture, through its registry entry's parser.
        let mut archs = Vec::new();
        let mut names = Vec::new();
        for entry in registry::entries() {
            archs.push(Arch {
                model_type: entry.model_type,
                architectures: entry.architectures,
                entry,
            });
            names.extend(entry.names());
        }
        Ok(ConfigTarget {
            archs,
            names,
            seeds: Vec::new(),
            pool: Vec::new(),
            dict: Dict::default(),
            stats: Stats::default(),
        })
    }

    fn add_seed(&mut self, name: String, bytes: &[u8]) {
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            if v.is_object() {
                self.dict.learn(&v);
                self.seeds.push((name, v));
                self.pool.push(bytes.to_vec());
            }
        }
    }
}

/// A few configs written by hand: the shapes real checkpoints have (nested `text_config`, RoPE
/// scaling of each kind, quantization, per-layer lists, tagged floats).
fn config_seeds() -> Vec<(String, Value)> {
    vec![
        (
            "llama.json".into(),
            json!({
                "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
                "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
                "num_hidden_layers": 2, "vocab_size": 100, "rms_norm_eps": 1e-5,
                "rope_theta": 10000.0, "max_position_embeddings": 2048, "tie_word_embeddings": true,
                "hidden_act": "silu", "attention_bias": false, "mlp_bias": false,
                "bos_token_id": 1, "eos_token_id": [2, 3], "torch_dtype": "bfloat16",
                "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
            }),
        ),
        (
            "llama-quantized.json".into(),
            json!({
                "model_type": "mistral", "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100,
                "rms_norm_eps": 1e-6, "head_dim": 16, "sliding_window": null,
                "quantization": {"group_size": 64, "bits": 4,
                    "model.layers.0.mlp.down_proj": {"group_size": 32, "bits": 8}},
                "quantization_config": {"group_size": 64, "bits": 4},
                "rope_scaling": {"type": "linear", "factor": 2.0},
            }),
        ),
        (
            "gemma3-text-config.json".into(),
            json!({
                "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3_text",
                "text_config": {"model_type": "gemma3_text", "hidden_size": 64,
                    "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 1,
                    "num_hidden_layers": 3, "head_dim": 16, "vocab_size": 100,
                    "sliding_window": 16, "sliding_window_pattern": 2, "rope_local_base_freq": 10000.0,
                    "query_pre_attn_scalar": 16, "rms_norm_eps": 1e-6,
                    "rope_scaling": {"rope_type": "linear", "factor": 8.0},
                    "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]},
                "vision_config": {"hidden_size": 32},
            }),
        ),
        (
            "gemma2.json".into(),
            json!({
                "model_type": "gemma2", "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
                "head_dim": 16, "vocab_size": 100, "rms_norm_eps": 1e-6, "rope_theta": 10000,
                "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                "query_pre_attn_scalar": 16, "sliding_window": 4096,
                "hidden_activation": "gelu_pytorch_tanh",
            }),
        ),
        (
            "phi3-longrope.json".into(),
            json!({
                "model_type": "phi3", "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 2,
                "vocab_size": 100, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                "max_position_embeddings": 4096, "original_max_position_embeddings": 2048,
                "partial_rotary_factor": 0.5,
                "rope_scaling": {"type": "longrope", "long_factor": [1.0, 1.5, 2.0, 2.5],
                    "short_factor": [1.0, 1.0, 1.0, 1.0]},
            }),
        ),
        (
            "qwen2-yarn.json".into(),
            json!({
                "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
                "vocab_size": 100, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
                "tie_word_embeddings": false, "use_sliding_window": false,
                "rope_scaling": {"type": "yarn", "factor": 4.0,
                    "original_max_position_embeddings": 32768, "beta_fast": 32, "beta_slow": 1},
            }),
        ),
        (
            "qwen3-nonfinite.json".into(),
            json!({
                "model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
                "head_dim": 16, "vocab_size": 100, "rms_norm_eps": {"__float__": "NaN"},
                "rope_theta": {"__float__": "Infinity"}, "max_window_layers": 28,
                "rope_scaling": {"rope_type": "dynamic", "factor": 2.0},
            }),
        ),
        (
            "smollm3.json".into(),
            json!({
                "model_type": "smollm3", "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 4,
                "vocab_size": 100, "rms_norm_eps": 1e-6, "rope_theta": 5000000.0,
                "no_rope_layer_interval": 4, "no_rope_layers": [1, 1, 1, 0],
                "use_sliding_window": false, "sliding_window": null,
                "layer_types": ["full_attention", "full_attention", "full_attention", "full_attention"],
            }),
        ),
        (
            "cohere.json".into(),
            json!({
                "model_type": "cohere", "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 2,
                "vocab_size": 100, "layer_norm_eps": 1e-5, "logit_scale": 0.0625,
                "use_qk_norm": true, "rope_theta": 10000.0,
            }),
        ),
        (
            "granite.json".into(),
            json!({
                "model_type": "granite", "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
                "vocab_size": 100, "rms_norm_eps": 1e-5, "embedding_multiplier": 12.0,
                "attention_multiplier": 0.015625, "residual_multiplier": 0.22,
                "logits_scaling": 8.0, "rope_theta": 10000.0,
            }),
        ),
        (
            "starcoder2.json".into(),
            json!({
                "model_type": "starcoder2", "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
                "vocab_size": 100, "norm_epsilon": 1e-5, "rope_theta": 100000.0,
                "use_bias": true, "sliding_window": 4096, "hidden_act": "gelu_pytorch_tanh",
            }),
        ),
        (
            "olmo2.json".into(),
            json!({
                "model_type": "olmo2", "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 2,
                "vocab_size": 100, "rms_norm_eps": 1e-6, "rope_theta": 500000.0,
            }),
        ),
    ]
}

impl Target for ConfigTarget {
    fn seed(&mut self, corpus: &Path) {
        for (name, v) in config_seeds() {
            let text = serde_json::to_vec(&v).expect("seed");
            self.add_seed(name, &text);
        }
        for p in files_in(&corpus.join("config"), ".json") {
            if let Ok(b) = std::fs::read(&p) {
                self.add_seed(p.display().to_string(), &b);
            }
        }
        // The reference configs of the parity tests, when they were made here.
        let mut found = Vec::new();
        find_named(
            &workspace_dir().join("target/reference-cache"),
            "config.json",
            &mut found,
        );
        for p in found {
            if let Ok(b) = std::fs::read(&p) {
                self.add_seed(p.display().to_string(), &b);
            }
        }
        let names: Vec<&str> = self.names.clone();
        self.dict.add_strings(&names);
        self.dict.add_strings(&[
            "linear",
            "dynamic",
            "yarn",
            "llama3",
            "longrope",
            "su",
            "default",
            "mrope",
            "sliding_attention",
            "full_attention",
            "silu",
            "gelu",
            "gelu_pytorch_tanh",
            "relu",
        ]);
        self.dict.add_keys(&[
            "text_config",
            "rope_parameters",
            "quantization",
            "layer_types",
        ]);
    }

    fn seed_files(&self) -> Vec<(String, Vec<u8>)> {
        config_seeds()
            .into_iter()
            .map(|(n, v)| {
                let text = serde_json::to_string_pretty(&v).expect("seed") + "\n";
                (format!("config/{n}"), text.into_bytes())
            })
            .collect()
    }

    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        if self.pool.len() > self.seeds.len() && rng.one_in(3) {
            // A kept input, mutated at the byte level or re-parsed and mutated as JSON.
            let mut b = rng.pick(&self.pool).clone();
            if let (true, Ok(v)) = (rng.one_in(2), serde_json::from_slice::<Value>(&b)) {
                return json_input(&v, rng, &self.dict, &self.pool);
            }
            mutate_bytes(&mut b, rng, &self.pool, JSON_TOKENS);
            return b;
        }
        let (_, seed) = rng.pick(&self.seeds);
        let mut v = seed.clone();
        match rng.below(6) {
            // Any registered architecture reads any config.
            0 => {
                if let Some(m) = v.as_object_mut() {
                    m.insert("model_type".into(), json!(*rng.pick(&self.names)));
                }
            }
            // The same keys one level down, as multimodal configs have them.
            1 => {
                if let Some(m) = v.as_object_mut() {
                    let keys: Vec<String> = m.keys().cloned().collect();
                    let mut inner = Map::new();
                    for k in keys {
                        if rng.one_in(2) {
                            if let Some(x) = m.remove(&k) {
                                inner.insert(k, x);
                            }
                        }
                    }
                    m.insert("text_config".into(), Value::Object(inner));
                }
            }
            _ => {}
        }
        json_input(&v, rng, &self.dict, &self.pool)
    }

    fn run(&mut self, input: &[u8]) -> String {
        // As `checkpoint::read_config` reads the file: JSON, or JSON with bare NaN / Infinity.
        let value: Value = match serde_json::from_slice(input) {
            Ok(v) => v,
            Err(_) => {
                let retry = std::str::from_utf8(input)
                    .ok()
                    .and_then(checkpoint::tag_bare_non_finite)
                    .and_then(|t| serde_json::from_str(&t).ok());
                match retry {
                    Some(v) => v,
                    None => return "not json".into(),
                }
            }
        };
        if let Some(eos) = value.get("eos_token_id") {
            let _ =
                checkpoint::parse_eos_ids(eos, Path::new("config.json")).map_err(|e| e.to_string());
        }
        self.stats.bump("valid JSON");
        let mut result = match registry::for_config(&value) {
            Ok(e) => {
                self.stats.bump("with a registered model type");
                e.model_type.to_string()
            }
            Err(e) => outcome(&e.to_string()),
        };
        let selected = registry::for_config(&value).ok();
        // Every architecture parses; the round trip (three more parses' worth of work) is
        // checked for the one the registry picks and one other.
        let other = input.len() % self.archs.len();
        for (k, arch) in self.archs.iter().enumerate() {
            let chosen = selected.is_some_and(|e| {
                e.model_type == arch.model_type && e.architectures == arch.architectures
            });
            let r = parse_args(arch, &value, chosen || k == other);
            if chosen {
                if r.is_ok() {
                    self.stats.bump("parsed by it");
                }
                result.push_str(": ");
                result.push_str(&outcome(&r.unwrap_or_else(|e| e)));
            }
        }
        result
    }

    fn details(&self) -> String {
        self.stats.show()
    }

    fn keep(&mut self, input: &[u8]) {
        if self.pool.len() < 3000 && input.len() <= MAX_KEPT {
            self.pool.push(input.to_vec());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// safetensors
// ---------------------------------------------------------------------------------------------

fn st_file(header: &Value, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_vec(header).expect("header");
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(data);
    out
}

/// Hand-made safetensors files: every dtype MLX reads, metadata, empty tensors, padding.
fn safetensors_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut header = Map::new();
    let mut data = Vec::new();
    let dtypes: &[(&str, usize)] = &[
        ("F32", 4),
        ("BF16", 2),
        ("F16", 2),
        ("U32", 4),
        ("I64", 8),
        ("BOOL", 1),
        ("F8_E4M3", 1),
        ("U8", 1),
        ("I32", 4),
        ("F64", 8),
    ];
    for (i, (dt, w)) in dtypes.iter().enumerate() {
        let shape: Vec<usize> = match i % 3 {
            0 => vec![2, 3],
            1 => vec![4],
            _ => vec![1, 2, 2],
        };
        let n: usize = shape.iter().product::<usize>() * w;
        let start = data.len();
        data.extend((0..n).map(|k| (k * 7 + i) as u8));
        header.insert(
            format!("model.layers.{i}.weight"),
            json!({"dtype": dt, "shape": shape, "data_offsets": [start, start + n]}),
        );
    }
    header.insert(
        "__metadata__".into(),
        json!({"format": "mlx", "note": "fuzz seed"}),
    );
    seeds.push((
        "dtypes.safetensors".to_string(),
        st_file(&Value::Object(header), &data),
    ));
    seeds.push((
        "empty-tensor.safetensors".to_string(),
        st_file(
            &json!({"a": {"dtype": "F32", "shape": [0, 5], "data_offsets": [0, 0]},
                     "b": {"dtype": "F16", "shape": [], "data_offsets": [0, 2]}}),
            &[0, 60],
        ),
    ));
    seeds.push((
        "no-tensors.safetensors".to_string(),
        st_file(&json!({}), &[]),
    ));
    // A quantized layer, as MLX writes it: packed uint32 weights, scales and biases.
    let mut q = Vec::new();
    q.extend(std::iter::repeat_n(0x11u8, 4 * 8 * 2));
    q.extend(std::iter::repeat_n(0x3cu8, 2 * 8));
    q.extend(std::iter::repeat_n(0x00u8, 2 * 8));
    seeds.push((
        "quantized.safetensors".to_string(),
        st_file(
            &json!({
                "lm_head.weight": {"dtype": "U32", "shape": [8, 2], "data_offsets": [0, 64]},
                "lm_head.scales": {"dtype": "F16", "shape": [8, 1], "data_offsets": [64, 80]},
                "lm_head.biases": {"dtype": "F16", "shape": [8, 1], "data_offsets": [80, 96]},
                "__metadata__": {"format": "mlx"}
            }),
            &q,
        ),
    ));
    // Written by the `safetensors` crate itself (its header is padded to 8 bytes).
    let a: Vec<u8> = (0..24u8).collect();
    let b: Vec<u8> = (0..8u8).collect();
    let views = vec![
        (
            "x".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &a)
                .expect("view"),
        ),
        (
            "y".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![4], &b)
                .expect("view"),
        ),
    ];
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    seeds.push((
        "crate.safetensors".to_string(),
        safetensors::tensor::serialize(views, Some(meta)).expect("serialize"),
    ));
    seeds
}

struct SafetensorsTarget {
    pool: Vec<Vec<u8>>,
    seeds: usize,
    dict: Dict,
    scratch: PathBuf,
    count: u64,
    stats: Stats,
}

const ST_DTYPES: &[&str] = &[
    "F32",
    "F16",
    "BF16",
    "F64",
    "I8",
    "U8",
    "I16",
    "U16",
    "I32",
    "U32",
    "I64",
    "U64",
    "BOOL",
    "F8_E4M3",
    "F8_E5M2",
    "F8_E8M0",
    "F4",
    "F6_E2M3",
    "F6_E3M2",
    "C64",
    "F8_E4M3FNUZ",
    "f32",
    "",
    "E8M0",
    "U4",
    "I4",
];

/// Splits a safetensors file into its header JSON and data section, when it has that shape.
fn split_st(bytes: &[u8]) -> Option<(Value, Vec<u8>)> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let v = serde_json::from_slice(header).ok()?;
    Some((v, bytes[8 + n..].to_vec()))
}

impl SafetensorsTarget {
    fn structured(&mut self, rng: &mut Rng, seed: &[u8]) -> Option<Vec<u8>> {
        let (mut header, mut data) = split_st(seed)?;
        let tensors: Vec<String> = header
            .as_object()?
            .keys()
            .filter(|k| *k != "__metadata__")
            .cloned()
            .collect();
        for _ in 0..rng.range(1, 3) {
            let t = if tensors.is_empty() {
                None
            } else {
                Some(rng.pick(&tensors).clone())
            };
            let len = data.len();
            let op = rng.below(8);
            let Some(obj) = header.as_object_mut() else {
                mutate_json(&mut header, rng, &self.dict);
                continue;
            };
            let info = t
                .as_ref()
                .and_then(|t| obj.get_mut(t))
                .and_then(Value::as_object_mut);
            match (op, info) {
                (0, Some(info)) => {
                    // One dimension (or the whole shape) extreme.
                    if let Some(shape) = info.get_mut("shape").and_then(Value::as_array_mut) {
                        if !shape.is_empty() && rng.one_in(3) {
                            let i = rng.below(shape.len());
                            shape[i] = json!(interesting_u64(rng, 0));
                        } else {
                            let n = rng.below(5);
                            *shape = (0..n)
                                .map(|_| json!(interesting_u64(rng, 4) % 70000))
                                .collect();
                        }
                    }
                }
                (1, Some(info)) => {
                    let mut offset = || {
                        if rng.one_in(2) {
                            interesting_u64(rng, len)
                        } else {
                            rng.below(len + 1) as u64
                        }
                    };
                    let (a, b) = (offset(), offset());
                    info.insert("data_offsets".into(), json!([a, b]));
                }
                (2, Some(info)) => {
                    info.insert("dtype".into(), json!(*rng.pick(ST_DTYPES)));
                }
                (3, Some(info)) => {
                    // A second tensor over the same bytes, or the entry removed.
                    let copy = Value::Object(info.clone());
                    let t = t.clone().unwrap_or_default();
                    if rng.one_in(2) {
                        obj.insert(format!("{t}.copy"), copy);
                    } else {
                        obj.remove(&t);
                    }
                }
                (4, _) => {
                    let meta = match rng.below(4) {
                        0 => json!({"format": 1}),
                        1 => json!(["a"]),
                        2 => json!({"k": {"nested": true}}),
                        _ => json!(null),
                    };
                    obj.insert("__metadata__".into(), meta);
                }
                _ => mutate_json(&mut header, rng, &self.dict),
            }
        }
        match rng.below(6) {
            0 => {
                let end = header
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
                    .max()
                    .unwrap_or(0)
                    .min(1 << 20);
                data.resize(end as usize, 0);
            }
            1 => data.truncate(rng.below(data.len() + 1)),
            2 => data.extend(std::iter::repeat_n(0u8, rng.range(1, 64))),
            _ => {}
        }
        let mut text = String::new();
        let dup = rng.one_in(10);
        write_json(&header, &mut text, rng, dup, false, 0);
        if text.len() > MAX_INPUT {
            // Stacked edits can grow a header without end; larger is only slower.
            return None;
        }
        let mut text = text.into_bytes();
        if rng.one_in(4) {
            // Padding, as the crate writes it (spaces), or other bytes.
            let pad = *rng.pick(&[b' ', b'\0', b'\n']);
            text.extend(std::iter::repeat_n(pad, rng.range(1, 8)));
        }
        let mut len = text.len() as u64;
        if rng.one_in(8) {
            len = interesting_u64(rng, text.len());
        }
        let mut out = len.to_le_bytes().to_vec();
        out.extend(text);
        out.extend(data);
        Some(out)
    }
}

impl Target for SafetensorsTarget {
    fn seed(&mut self, corpus: &Path) {
        for (_, b) in safetensors_seeds() {
            self.pool.push(b);
        }
        for p in files_in(&corpus.join("safetensors"), ".safetensors") {
            if let Ok(b) = std::fs::read(&p) {
                self.pool.push(b);
            }
        }
        let mut found = Vec::new();
        find_named(
            &workspace_dir().join("target/reference-cache"),
            "reference.safetensors",
            &mut found,
        );
        for p in found.iter().take(8) {
            if let Ok(b) = std::fs::read(p) {
                if b.len() <= 1 << 20 {
                    self.pool.push(b);
                }
            }
        }
        for b in &self.pool {
            if let Some((h, _)) = split_st(b) {
                self.dict.learn(&h);
            }
        }
        self.dict.add_strings(ST_DTYPES);
        self.dict
            .add_keys(&["dtype", "shape", "data_offsets", "__metadata__"]);
        self.seeds = self.pool.len();
    }

    fn seed_files(&self) -> Vec<(String, Vec<u8>)> {
        safetensors_seeds()
            .into_iter()
            .map(|(n, b)| (format!("safetensors/{n}"), b))
            .collect()
    }

    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        let seed = if rng.one_in(3) {
            rng.pick(&self.pool).clone()
        } else {
            self.pool[rng.below(self.seeds)].clone()
        };
        if rng.below(3) > 0 {
            if let Some(out) = self.structured(rng, &seed) {
                return out;
            }
        }
        let mut b = seed;
        if rng.one_in(4) && b.len() >= 8 {
            let v = interesting_u64(rng, b.len().saturating_sub(8));
            b[..8].copy_from_slice(&v.to_le_bytes());
        } else {
            mutate_bytes(&mut b, rng, &self.pool, JSON_TOKENS);
        }
        b
    }

    fn run(&mut self, input: &[u8]) -> String {
        self.count += 1;
        let path = Path::new("fuzz.safetensors");
        let result = checkpoint::parse_safetensors(path, input);
        let out = match &result {
            Ok(h) => {
                self.stats.bump("valid");
                // What the loader relies on: the tensors tile the data section exactly and each
                // has shape x dtype bytes.
                let data_start = 8 + h.header_len;
                assert!(data_start <= input.len(), "header past the end of the file");
                let data_len = input.len() - data_start;
                let mut spans: Vec<(usize, usize, &String)> = Vec::new();
                for (name, t) in &h.tensors {
                    let (a, b) = t.data_offsets;
                    assert!(
                        a <= b && b <= data_len,
                        "{name}: offsets {a}..{b} outside {data_len}"
                    );
                    assert!(
                        t.shape.iter().all(|&d| d >= 0),
                        "{name}: negative dimension"
                    );
                    let n: u128 = t.shape.iter().map(|&d| d as u128).product();
                    let bytes = n * checkpoint::dtype_width(t.dtype) as u128;
                    assert_eq!(
                        bytes,
                        (b - a) as u128,
                        "{name}: {} bytes for shape {:?} {:?}",
                        b - a,
                        t.shape,
                        t.dtype
                    );
                    spans.push((a, b, name));
                }
                spans.sort();
                let mut at = 0;
                for (a, b, name) in &spans {
                    assert_eq!(*a, at, "{name}: a gap or an overlap at {at}");
                    at = *b;
                }
                assert_eq!(at, data_len, "the tensors do not cover the data section");
                format!("ok {}", h.tensors.len().min(4))
            }
            Err(e) => outcome(&e.to_string()),
        };
        // Every valid input (and now and then another) as a file, through the readers the
        // loader uses.
        if result.is_ok() || self.count % 64 == 0 {
            let file = self.scratch.join("model.safetensors");
            if std::fs::write(&file, input).is_ok() {
                let from_file = checkpoint::read_safetensors_header(&file);
                self.stats.bump("read again from a file");
                assert_eq!(
                    from_file.is_ok(),
                    result.is_ok(),
                    "the file and the bytes disagree: {:?} vs {:?}",
                    from_file.as_ref().err().map(|e| e.to_string()),
                    result.as_ref().err().map(|e| e.to_string())
                );
                if let Ok(h) = &result {
                    let strategy = if self.count % 2 == 0 {
                        LoadStrategy::Copy
                    } else {
                        LoadStrategy::Mmap
                    };
                    self.stats.bump("loaded into MLX arrays");
                    let arrays = checkpoint::load_safetensors(&file, strategy)
                        .unwrap_or_else(|e| panic!("a validated file does not load: {e}"));
                    for (name, t) in &h.tensors {
                        let a = &arrays[name];
                        assert_eq!(a.shape(), t.shape.as_slice(), "{name}: loaded shape");
                    }
                }
            }
        }
        out
    }

    fn details(&self) -> String {
        self.stats.show()
    }

    fn keep(&mut self, input: &[u8]) {
        if self.pool.len() < 3000 && input.len() <= MAX_KEPT {
            self.pool.push(input.to_vec());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF
// ---------------------------------------------------------------------------------------------

/// A metadata value of a GGUF file, before it is written.
#[derive(Clone, Debug)]
enum GVal {
    /// A fixed-size value: its type and little-endian bytes.
    Scalar(u32, Vec<u8>),
    Str(Vec<u8>),
    /// Item type, items; `len` overrides the written length.
    Arr(u32, Vec<GVal>, Option<u64>),
}

#[derive(Clone, Debug)]
struct GTensor {
    name: Vec<u8>,
    dims: Vec<u64>,
    n_dims: Option<u32>,
    ty: u32,
    offset: u64,
}

/// A GGUF file as parts, so that mutations can lie about any one length or count.
#[derive(Clone, Debug)]
struct Gguf {
    magic: [u8; 4],
    version: u32,
    kvs: Vec<(Vec<u8>, GVal, Option<u32>)>,
    tensors: Vec<GTensor>,
    n_tensors: Option<u64>,
    n_keys: Option<u64>,
    /// The string length written instead of the real one, for the key at this index.
    key_len_lie: Option<(usize, u64)>,
    alignment: u64,
    data: Vec<u8>,
}

fn gval_type(v: &GVal) -> u32 {
    match v {
        GVal::Scalar(t, _) => *t,
        GVal::Str(_) => 8,
        GVal::Arr(..) => 9,
    }
}

fn write_gval(out: &mut Vec<u8>, v: &GVal) {
    match v {
        GVal::Scalar(_, b) => out.extend(b),
        GVal::Str(s) => {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s);
        }
        GVal::Arr(item, items, len) => {
            out.extend(item.to_le_bytes());
            out.extend(len.unwrap_or(items.len() as u64).to_le_bytes());
            for x in items {
                write_gval(out, x);
            }
        }
    }
}

impl Gguf {
    fn bytes(&self) -> Vec<u8> {
        let mut out = self.magic.to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend(
            self.n_tensors
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        out.extend(self.n_keys.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        for (i, (k, v, ty)) in self.kvs.iter().enumerate() {
            let len = match self.key_len_lie {
                Some((j, n)) if j == i => n,
                _ => k.len() as u64,
            };
            out.extend(len.to_le_bytes());
            out.extend(k);
            out.extend(ty.unwrap_or_else(|| gval_type(v)).to_le_bytes());
            write_gval(&mut out, v);
        }
        for t in &self.tensors {
            out.extend((t.name.len() as u64).to_le_bytes());
            out.extend(&t.name);
            out.extend(t.n_dims.unwrap_or(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.to_le_bytes());
            out.extend(t.offset.to_le_bytes());
        }
        let a = self.alignment.clamp(1, 4096) as usize;
        out.resize(out.len().div_ceil(a) * a, 0);
        out.extend(&self.data);
        out
    }
}

fn gs(s: &str) -> GVal {
    GVal::Str(s.as_bytes().to_vec())
}
fn gu32(v: u32) -> GVal {
    GVal::Scalar(4, v.to_le_bytes().to_vec())
}
fn gi32(v: i32) -> GVal {
    GVal::Scalar(5, v.to_le_bytes().to_vec())
}
fn gf32(v: f32) -> GVal {
    GVal::Scalar(6, v.to_le_bytes().to_vec())
}
fn gbool(v: bool) -> GVal {
    GVal::Scalar(7, vec![v as u8])
}
fn gu64(v: u64) -> GVal {
    GVal::Scalar(10, v.to_le_bytes().to_vec())
}

/// Bytes of a tensor of `ty` and `elements`, as ggml lays it out.
fn gguf_tensor_bytes(ty: u32, elements: u64) -> u64 {
    match header::GgmlType(ty).block_layout() {
        Some((block, size)) => elements / block * size,
        None => elements,
    }
}

/// A small llama GGUF with a tokenizer and tensors of several types; `variant` varies it.
fn gguf_seed(variant: usize) -> Gguf {
    let hidden = 32u64;
    let tokens: Vec<String> = {
        let mut t: Vec<String> = [
            "<s>",
            "</s>",
            "<unk>",
            "Ġ",
            "h",
            "e",
            "l",
            "o",
            "he",
            "ll",
            "hell",
            "hello",
            "Ġhello",
            "<|im_start|>",
            "<|im_end|>",
            "<think>",
            "</think>",
            "w",
            "r",
            "d",
            "1",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        while t.len() < 32 {
            t.push(format!("tok{}", t.len()));
        }
        t
    };
    let vocab = tokens.len() as u64;
    let types: Vec<GVal> = (0..vocab as usize)
        .map(|i| {
            gi32(if i < 3 || (13..15).contains(&i) {
                3
            } else if i == 15 || i == 16 {
                4
            } else {
                1
            })
        })
        .collect();
    let mut kvs: Vec<(Vec<u8>, GVal, Option<u32>)> = vec![
        (b"general.architecture".to_vec(), gs("llama"), None),
        (b"general.name".to_vec(), gs("fuzz seed"), None),
        (b"general.alignment".to_vec(), gu32(32), None),
        (b"llama.embedding_length".to_vec(), gu32(hidden as u32), None),
        (b"llama.block_count".to_vec(), gu32(1), None),
        (b"llama.feed_forward_length".to_vec(), gu32(64), None),
        (b"llama.attention.head_count".to_vec(), gu32(4), None),
        (b"llama.attention.head_count_kv".to_vec(), gu32(2), None),
        (b"llama.attention.layer_norm_rms_epsilon".to_vec(), gf32(1e-5), None),
        (b"llama.rope.freq_base".to_vec(), gf32(10000.0), None),
        (b"llama.context_length".to_vec(), gu32(2048), None),
        (b"tokenizer.ggml.model".to_vec(), gs("gpt2"), None),
        (b"tokenizer.ggml.pre".to_vec(), gs(if variant % 2 == 0 { "smollm" } else { "gpt2" }), None),
        (
            b"tokenizer.ggml.tokens".to_vec(),
            GVal::Arr(8, tokens.iter().map(|t| gs(t)).collect(), None),
            None,
        ),
        (b"tokenizer.ggml.token_type".to_vec(), GVal::Arr(5, types, None), None),
        (
            b"tokenizer.ggml.merges".to_vec(),
            GVal::Arr(8, ["h e", "l l", "he ll", "hell o", "Ġ hello"].iter().map(|m| gs(m)).collect(), None),
            None,
        ),
        (b"tokenizer.ggml.bos_token_id".to_vec(), gu32(0), None),
        (b"tokenizer.ggml.eos_token_id".to_vec(), gu32(1), None),
        (b"tokenizer.ggml.add_bos_token".to_vec(), gbool(variant % 3 == 0), None),
        (
            b"tokenizer.chat_template".to_vec(),
            gs("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
            None,
        ),
    ];
    if variant % 4 == 1 {
        kvs.push((b"llama.rope.scaling.type".to_vec(), gs("linear"), None));
        kvs.push((b"llama.rope.scaling.factor".to_vec(), gf32(2.0), None));
        kvs.push((b"llama.vocab_size".to_vec(), gu64(vocab), None));
        kvs.push((b"tokenizer.ggml.eot_token_id".to_vec(), gu32(14), None));
        kvs.push((
            b"general.tags".to_vec(),
            GVal::Arr(6, vec![gf32(1.0), gf32(-2.5)], None),
            None,
        ));
    }
    let mut specs: Vec<(&str, Vec<u64>, u32)> = vec![
        ("token_embd.weight", vec![vocab, hidden], 0),
        ("output_norm.weight", vec![hidden], 0),
        ("blk.0.attn_norm.weight", vec![hidden], 1),
        ("blk.0.attn_q.weight", vec![hidden, hidden], 2),
        ("blk.0.attn_k.weight", vec![hidden / 2, hidden], 8),
        ("blk.0.ffn_down.weight", vec![hidden, 256], 14),
    ];
    if variant % 4 == 2 {
        specs.push(("blk.0.attn_v.weight", vec![16, hidden], 3));
        specs.push(("blk.0.ffn_up.weight", vec![1, 256], 10));
        specs.push(("output.weight", vec![vocab, hidden], 1));
    }
    if variant % 4 == 3 {
        specs.push(("blk.0.ffn_gate.weight", vec![1, 256], 12));
    }
    let mut tensors = Vec::new();
    let mut data = Vec::new();
    for (name, shape, ty) in specs {
        let elements: u64 = shape.iter().product();
        let n = gguf_tensor_bytes(ty, elements) as usize;
        tensors.push(GTensor {
            name: name.as_bytes().to_vec(),
            // GGUF stores the innermost dimension first.
            dims: shape.iter().rev().copied().collect(),
            n_dims: None,
            ty,
            offset: data.len() as u64,
        });
        // Small values: f16 / f32 zeros and ones, quantized blocks with zero scales.
        data.extend(std::iter::repeat_n(0u8, n));
        data.resize(data.len().div_ceil(32) * 32, 0);
    }
    Gguf {
        magic: *b"GGUF",
        version: if variant % 5 == 4 { 2 } else { 3 },
        kvs,
        tensors,
        n_tensors: None,
        n_keys: None,
        key_len_lie: None,
        alignment: 32,
        data,
    }
}

struct GgufTarget {
    seeds: Vec<Gguf>,
    pool: Vec<Vec<u8>>,
    scratch: PathBuf,
    archs: Vec<Arch>,
    opened: u64,
    stats: Stats,
}

const GGUF_KEYS: &[&str] = &[
    "general.architecture",
    "general.alignment",
    "llama.embedding_length",
    "llama.block_count",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.layer_norm_rms_epsilon",
    "llama.attention.key_length",
    "llama.rope.freq_base",
    "llama.context_length",
    "llama.vocab_size",
    "llama.rope.scaling.type",
    "llama.rope.scaling.factor",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.chat_template",
];

fn random_gval(rng: &mut Rng, depth: usize) -> GVal {
    match rng.below(if depth > 0 { 9 } else { 11 }) {
        0 => GVal::Scalar(0, vec![rng.next() as u8]),
        1 => GVal::Scalar(1, vec![rng.next() as u8]),
        2 => GVal::Scalar(3, (rng.next() as u16).to_le_bytes().to_vec()),
        3 => gu32(interesting_u64(rng, 0) as u32),
        4 => gi32(interesting_u64(rng, 0) as i32),
        5 => gf32(*rng.pick(&[
            0.0f32,
            -1.0,
            1e-5,
            f32::NAN,
            f32::INFINITY,
            f32::MAX,
            1e38,
            0.5,
        ])),
        6 => gbool(rng.one_in(2)),
        7 => gu64(interesting_u64(rng, 0)),
        8 => GVal::Str(
            rng.pick(&[
                &b""[..],
                b"llama",
                b"gpt2",
                b"smollm",
                b"linear",
                b"yarn",
                b"none",
                b"\xff\xfe",
                b"a b",
                b"{{ x }}",
                b"{% for %}",
            ])
            .to_vec(),
        ),
        9 => {
            let item = *rng.pick(&[4u32, 5, 6, 7, 8, 10, 12, 9, 13]);
            let n = *rng.pick(&[0usize, 1, 2, 3, 40]);
            let items = (0..n)
                .map(|_| match item {
                    8 => random_gval_of(rng, 8),
                    9 => random_gval(rng, depth + 1),
                    t => random_gval_of(rng, t),
                })
                .collect();
            GVal::Arr(item, items, None)
        }
        _ => GVal::Scalar(12, interesting_u64(rng, 0).to_le_bytes().to_vec()),
    }
}

fn random_gval_of(rng: &mut Rng, ty: u32) -> GVal {
    match ty {
        0 | 1 => GVal::Scalar(ty, vec![rng.next() as u8]),
        7 => gbool(rng.one_in(2)),
        2 | 3 => GVal::Scalar(ty, (interesting_u64(rng, 0) as u16).to_le_bytes().to_vec()),
        4 | 5 => GVal::Scalar(ty, (interesting_u64(rng, 0) as u32).to_le_bytes().to_vec()),
        6 => gf32(*rng.pick(&[0.0f32, 1.0, -1.0, f32::NAN])),
        8 => GVal::Str(random_text(rng).into_bytes()),
        10..=12 => GVal::Scalar(ty, interesting_u64(rng, 0).to_le_bytes().to_vec()),
        _ => GVal::Scalar(ty, vec![]),
    }
}

impl GgufTarget {
    fn mutate(&self, g: &mut Gguf, rng: &mut Rng) {
        for _ in 0..rng.range(1, 4) {
            match rng.below(20) {
                0 => g.version = *rng.pick(&[0u32, 1, 2, 3, 4, u32::MAX]),
                1 => g.n_tensors = Some(interesting_u64(rng, g.tensors.len())),
                2 => g.n_keys = Some(interesting_u64(rng, g.kvs.len())),
                3 if !g.kvs.is_empty() => {
                    let i = rng.below(g.kvs.len());
                    g.kvs[i].2 =
                        Some(*rng.pick(&[0u32, 3, 4, 6, 7, 8, 9, 10, 12, 13, 255, u32::MAX]));
                }
                4 if !g.kvs.is_empty() => {
                    let i = rng.below(g.kvs.len());
                    g.kvs[i].1 = random_gval(rng, 0);
                }
                5 if !g.kvs.is_empty() => {
                    // A string or array that claims more (or less) than it holds.
                    let i = rng.below(g.kvs.len());
                    match &mut g.kvs[i].1 {
                        GVal::Arr(_, items, len) => *len = Some(interesting_u64(rng, items.len())),
                        GVal::Str(_) => {
                            g.key_len_lie = Some((i, interesting_u64(rng, g.kvs[i].0.len())))
                        }
                        GVal::Scalar(_, b) => b.truncate(rng.below(b.len() + 1)),
                    }
                }
                6 if !g.kvs.is_empty() => {
                    let i = rng.below(g.kvs.len());
                    g.key_len_lie = Some((i, interesting_u64(rng, g.kvs[i].0.len())));
                }
                7 if !g.kvs.is_empty() => {
                    let i = rng.below(g.kvs.len());
                    g.kvs.remove(i);
                }
                8 => {
                    let key = rng.pick(GGUF_KEYS).as_bytes().to_vec();
                    let v = random_gval(rng, 0);
                    g.kvs.retain(|(k, _, _)| *k != key || rng.one_in(4));
                    let at = rng.below(g.kvs.len() + 1);
                    g.kvs.insert(at, (key, v, None));
                }
                9 => {
                    // The alignment: its value and its type.
                    let v = *rng.pick(&[0u32, 1, 3, 8, 64, 4096, 1 << 31, u32::MAX]);
                    let val = if rng.one_in(4) {
                        gu64(v as u64)
                    } else {
                        gu32(v)
                    };
                    g.kvs.retain(|(k, _, _)| k != b"general.alignment");
                    g.kvs.insert(0, (b"general.alignment".to_vec(), val, None));
                    if v.is_power_of_two() && v <= 4096 && rng.one_in(2) {
                        g.alignment = v as u64;
                    }
                }
                10 | 11 if !g.tensors.is_empty() => {
                    let i = rng.below(g.tensors.len());
                    let t = &mut g.tensors[i];
                    if !t.dims.is_empty() && rng.one_in(2) {
                        let d = rng.below(t.dims.len());
                        t.dims[d] = interesting_u64(rng, 0);
                    } else {
                        let n = rng.below(6);
                        t.dims = (0..n).map(|_| interesting_u64(rng, 32) % 300).collect();
                    }
                }
                12 if !g.tensors.is_empty() => {
                    let i = rng.below(g.tensors.len());
                    g.tensors[i].n_dims = Some(*rng.pick(&[0u32, 1, 2, 4, 5, 8, u32::MAX]));
                }
                13 if !g.tensors.is_empty() => {
                    let i = rng.below(g.tensors.len());
                    g.tensors[i].ty = if rng.one_in(4) {
                        interesting_u64(rng, 0) as u32
                    } else {
                        rng.below(42) as u32
                    };
                }
                14 if !g.tensors.is_empty() => {
                    let i = rng.below(g.tensors.len());
                    let len = g.data.len();
                    g.tensors[i].offset = match rng.below(3) {
                        0 => interesting_u64(rng, len),
                        1 => g.tensors[i].offset + 1,
                        _ => (rng.below(len / 32 + 2) * 32) as u64,
                    };
                }
                15 if !g.tensors.is_empty() => {
                    let i = rng.below(g.tensors.len());
                    g.tensors[i].name = match rng.below(4) {
                        0 => Vec::new(),
                        1 => b"\xff\xfe".to_vec(),
                        2 => g.tensors[rng.below(g.tensors.len())].name.clone(),
                        _ => rng
                            .pick(&[
                                &b"output.weight"[..],
                                b"blk.0.attn_q.bias",
                                b"blk.99.attn_q.weight",
                                b"blk.x.attn_k.weight",
                                b"token_embd.weight",
                            ])
                            .to_vec(),
                    };
                }
                16 if !g.tensors.is_empty() => {
                    let i = rng.below(g.tensors.len());
                    if rng.one_in(2) {
                        g.tensors.remove(i);
                    } else {
                        let t = g.tensors[i].clone();
                        g.tensors.push(t);
                    }
                }
                17 => {
                    let n = rng.below(g.data.len() + 1);
                    if rng.one_in(2) {
                        g.data.truncate(n);
                    } else {
                        g.data.extend(std::iter::repeat_n(0u8, rng.range(1, 300)));
                    }
                }
                18 => g.magic = *rng.pick(&[*b"GGUF", *b"GGUG", *b"FUGG", [0; 4]]),
                _ => {
                    // Tokenizer metadata: the lists the tokenizer is built from.
                    let key = *rng.pick(&[
                        "tokenizer.ggml.tokens",
                        "tokenizer.ggml.merges",
                        "tokenizer.ggml.token_type",
                    ]);
                    if let Some((_, GVal::Arr(_, items, _), _)) =
                        g.kvs.iter_mut().find(|(k, _, _)| k == key.as_bytes())
                    {
                        match rng.below(5) {
                            0 => items.clear(),
                            1 if !items.is_empty() => {
                                items.remove(rng.below(items.len()));
                            }
                            2 if !items.is_empty() => {
                                let x = items[rng.below(items.len())].clone();
                                items.push(x);
                            }
                            3 if !items.is_empty() => {
                                let i = rng.below(items.len());
                                items[i] = match &items[i] {
                                    GVal::Str(_) => GVal::Str(
                                        rng.pick(&[
                                            &b""[..],
                                            b" ",
                                            b"a  b",
                                            b"\xff",
                                            b"<s>",
                                            b"x y z",
                                            b"Ghello",
                                        ])
                                        .to_vec(),
                                    ),
                                    _ => gi32(*rng.pick(&[-1, 0, 1, 2, 3, 4, 5, 6, i32::MAX])),
                                };
                            }
                            _ => {
                                let x = random_gval(rng, 1);
                                items.push(x);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Target for GgufTarget {
    fn seed(&mut self, corpus: &Path) {
        self.seeds = (0..8).map(gguf_seed).collect();
        self.pool = self.seeds.iter().map(Gguf::bytes).collect();
        for p in files_in(&corpus.join("gguf"), ".gguf") {
            if let Ok(b) = std::fs::read(&p) {
                self.pool.push(b);
            }
        }
    }

    fn seed_files(&self) -> Vec<(String, Vec<u8>)> {
        (0..4)
            .map(|i| (format!("gguf/llama-{i}.gguf"), gguf_seed(i).bytes()))
            .collect()
    }

    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        if rng.below(3) > 0 {
            let mut g = rng.pick(&self.seeds).clone();
            self.mutate(&mut g, rng);
            let mut b = g.bytes();
            if rng.one_in(4) {
                mutate_bytes(&mut b, rng, &self.pool, &[b"GGUF"]);
            }
            b
        } else {
            let mut b = rng.pick(&self.pool).clone();
            mutate_bytes(&mut b, rng, &self.pool, &[b"GGUF"]);
            b
        }
    }

    fn run(&mut self, input: &[u8]) -> String {
        let path = Path::new("fuzz.gguf");
        let h = match header::scan_bytes(path, input) {
            Ok(h) => h,
            Err(e) => return outcome(&e.to_string()),
        };
        // What MLX's loader is promised: every tensor of a known layout inside the data
        // section, at an aligned offset, with a shape that fits MLX's dimensions.
        assert!(h.alignment.is_power_of_two(), "alignment {}", h.alignment);
        let data_bytes = (input.len() as u64).saturating_sub(h.data_start);
        for t in &h.tensors {
            assert_eq!(t.offset % h.alignment, 0, "{}: unaligned", t.name);
            if let Some((block, size)) = t.ggml_type.block_layout() {
                let elements: u128 = t.shape.iter().map(|&d| d as u128).product();
                let bytes = elements / block as u128 * size as u128;
                assert_eq!(
                    Some(bytes),
                    t.bytes.map(u128::from),
                    "{}: {:?} of shape {:?} is {bytes} bytes",
                    t.name,
                    t.ggml_type,
                    t.shape
                );
                assert!(
                    t.offset as u128 + bytes <= data_bytes as u128,
                    "{}: data past the end",
                    t.name
                );
            }
            assert!(
                t.shape.iter().all(|&d| d <= i32::MAX as u64),
                "{}: shape {:?} past MLX's 32-bit dimensions",
                t.name,
                t.shape
            );
        }
        let mut out = format!("scanned {}", h.tensors.len().min(3));
        // What passes the scan is opened by MLX and read as a checkpoint's metadata.
        self.opened += 1;
        self.stats.bump("passed the scan");
        let file = self.scratch.join("model.gguf");
        if std::fs::write(&file, input).is_err() {
            return out;
        }
        let from_file = header::scan(&file).expect("the file scans as the bytes did");
        assert_eq!(from_file, h, "scan and scan_bytes disagree");
        let gguf = match GgufCheckpoint::open(&file) {
            Ok(g) => {
                self.stats.bump("opened by MLX");
                g
            }
            Err(e) => return format!("{out}; {}", outcome(&e.to_string())),
        };
        match gguf.config() {
            Ok(config) => {
                out.push_str("; config");
                self.stats.bump("gave a config");
                // The config the metadata maps to goes through the registry like any other.
                if let Ok(e) = registry::for_config(&config) {
                    for a in &self.archs {
                        if a.model_type == e.model_type && a.architectures == e.architectures {
                            let r = parse_args(a, &config, true);
                            out.push_str(&format!(" {}", outcome(&r.unwrap_or_else(|e| e))));
                        }
                    }
                }
            }
            Err(e) => out.push_str(&format!("; {}", outcome(&e.to_string()))),
        }
        let _ = gguf.eos_token_ids().map_err(|e| e.to_string());
        match gguf.tokenizer() {
            Ok(tok) => {
                out.push_str("; tokenizer");
                self.stats.bump("gave a tokenizer");
                exercise_tokenizer(&tok);
            }
            Err(e) => out.push_str(&format!("; {}", outcome(&e.to_string()))),
        }
        out
    }

    fn details(&self) -> String {
        self.stats.show()
    }

    fn keep(&mut self, input: &[u8]) {
        if self.pool.len() < 3000 && input.len() <= MAX_KEPT {
            self.pool.push(input.to_vec());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tokenizer folders
// ---------------------------------------------------------------------------------------------

fn added(id: u32, content: &str, special: bool) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false,
           "rstrip": false, "normalized": !special, "special": special})
}

/// Hand-written tokenizer.json files of every model kind, with normalizers, pre-tokenizers,
/// post-processors and decoders of many kinds.
fn tokenizer_json_seeds() -> Vec<(String, Value)> {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
        .into_iter()
        .collect();
    alphabet.sort();
    let mut vocab = Map::new();
    for c in &alphabet {
        vocab.insert(c.to_string(), json!(vocab.len()));
    }
    let merges = [
        ("Ġ", "w"),
        ("h", "e"),
        ("l", "l"),
        ("he", "ll"),
        ("hell", "o"),
    ];
    for (a, b) in merges {
        vocab.insert(format!("{a}{b}"), json!(vocab.len()));
    }
    let n = vocab.len() as u32;
    let byte_bpe = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(n, "<|eot|>", true), added(n + 1, "<think>", true),
                         added(n + 2, "</think>", true), added(n + 3, "<|im_start|>", true),
                         added(n + 4, "<|im_end|>", true)],
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab,
                  "merges": merges.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>()},
    });

    let mut spm_vocab = Map::new();
    for t in ["<unk>", "<s>", "</s>"] {
        spm_vocab.insert(t.into(), json!(spm_vocab.len()));
    }
    for b in 0..=255u32 {
        spm_vocab.insert(format!("<0x{b:02X}>"), json!(spm_vocab.len()));
    }
    for t in ["▁", "h", "l", "o", "▁h", "ll", "w", "r", "d", "e"] {
        spm_vocab.insert(t.into(), json!(spm_vocab.len()));
    }
    let spm = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(0, "<unk>", true), added(1, "<s>", true), added(2, "</s>", true)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                  "ignore_merges": false, "vocab": spm_vocab,
                  "merges": [["▁", "h"], ["l", "l"]]},
    });

    let word_level = json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 2},
        "padding": {"strategy": {"Fixed": 8}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "<pad>"},
        "added_tokens": [added(0, "<pad>", true), added(1, "<s>", true), added(2, "</s>", true)],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"},
                       {"type": "Strip", "strip_left": true, "strip_right": true}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"},
                          {"type": "Punctuation", "behavior": "Isolated"}, {"type": "Digits", "individual_digits": true}]},
        "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1],
                           "trim_offsets": true, "add_prefix_space": false},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3,
                  "hello": 4, "world": 5, "!": 6, "1": 7}, "unk_token": "<unk>"},
    });

    let word_piece = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(0, "[PAD]", true), added(1, "[UNK]", true), added(2, "[CLS]", true),
                         added(3, "[SEP]", true), added(4, "[MASK]", true)],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100,
                  "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4,
                            "hello": 5, "world": 6, "he": 7, "##llo": 8, "世": 9, "##界": 10}},
    });

    let unigram = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(0, "<unk>", true), added(1, "<s>", true), added(2, "</s>", true)],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Nmt"}, {"type": "NFKC"}]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
        "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": false,
                  "vocab": [["<unk>", 0.0], ["<s>", 0.0], ["</s>", 0.0], ["▁", -2.0], ["▁hello", -3.0],
                            ["▁world", -3.5], ["h", -5.0], ["e", -5.0], ["l", -5.0], ["o", -5.0]]},
    });

    let split = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(7, "<|endoftext|>", true)],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
             "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
            {"type": "TemplateProcessing", "single": "<|endoftext|> $A", "pair": "$A $B:1",
             "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [7], "tokens": ["<|endoftext|>"]}}}]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": true,
                  "vocab": {"h": 0, "e": 1, "l": 2, "o": 3, "he": 4, "ll": 5, "hello": 6},
                  "merges": ["h e", "l l", "he ll", "hell o"]},
    });
    vec![
        ("byte-level-bpe".into(), byte_bpe),
        ("spm-bpe".into(), spm),
        ("word-level".into(), word_level),
        ("word-piece".into(), word_piece),
        ("unigram".into(), unigram),
        ("split-bpe".into(), split),
    ]
}

const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn tokenizer_config_seeds() -> Vec<Value> {
    vec![
        json!({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": null,
               "add_bos_token": true, "model_max_length": 2048, "chat_template": CHATML,
               "added_tokens_decoder": {"0": {"content": "<unk>", "special": true}}}),
        json!({"bos_token": {"content": "<|im_start|>", "lstrip": false, "normalized": false},
               "eos_token": {"content": "<|eot|>", "rstrip": false},
               "chat_template": [{"name": "default", "template": CHATML},
                                 {"name": "tool_use", "template": "{{ tools | tojson }}"}]}),
        json!({}),
        json!({"eos_token": "<|im_end|>", "chat_template": null, "clean_up_tokenization_spaces": false}),
        json!({"bos_token": "[CLS]", "sep_token": "[SEP]", "cls_token": "[CLS]", "mask_token": "[MASK]",
               "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content | trim }}{{ sep_token }}{% endfor %}"}),
    ]
}

/// Runs what a loaded tokenizer offers over a few texts and ids; errors are fine, panics not.
fn exercise_tokenizer(tok: &Tokenizer) {
    let texts = [
        "Hello world!",
        "",
        "  \n\t ",
        "hello 世界🎉 <s></s><|eot|><think> x </think> 12345",
        "\u{0}\u{fffd}\u{10ffff}é",
    ];
    let vocab = tok.vocab_size() as u32;
    let mut all_ids = Vec::new();
    for t in texts {
        for special in [false, true] {
            if let Ok(ids) = tok.encode(t, special) {
                all_ids.extend(ids);
            }
        }
        let _ = tok.encode_prompt(t);
    }
    all_ids.extend([0, 1, vocab.saturating_sub(1), vocab, vocab + 7, u32::MAX]);
    all_ids.truncate(256);
    for skip in [false, true] {
        let _ = tok.decode(&all_ids, skip);
    }
    let mut stream = tok.detokenizer();
    for &id in &all_ids {
        let _ = stream.add_token(id);
    }
    let _ = stream.finalize();
    let _ = stream.last_segment();
    let _ = tok.eos_token_ids().len();
    let _ = tok.special_tokens().len();
    if tok.has_chat_template() {
        let messages = [
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi!"),
            ChatMessage::new("assistant", "Hello."),
        ];
        let options = ChatOptions {
            add_generation_prompt: true,
            ..ChatOptions::default()
        };
        if let Ok(text) = tok.apply_chat_template(&messages, &options) {
            let _ = tok.encode_prompt(&text);
        }
    }
}

struct TokenizerTarget {
    tokenizers: Vec<Value>,
    configs: Vec<Value>,
    pool: Vec<Vec<u8>>,
    dict: Dict,
    dir: PathBuf,
    present: BTreeSet<String>,
    stats: Stats,
}

const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "config.json",
    "generation_config.json",
];

impl Target for TokenizerTarget {
    fn seed(&mut self, corpus: &Path) {
        self.tokenizers = tokenizer_json_seeds().into_iter().map(|(_, v)| v).collect();
        self.configs = tokenizer_config_seeds();
        let dir = corpus.join("tokenizer");
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        for d in subdirs {
            let read = |n: &str| std::fs::read(d.join(n)).ok();
            if let Some(v) = read("tokenizer.json").and_then(|b| serde_json::from_slice(&b).ok()) {
                self.tokenizers.push(v);
            }
            if let Some(v) =
                read("tokenizer_config.json").and_then(|b| serde_json::from_slice(&b).ok())
            {
                self.configs.push(v);
            }
        }
        for v in self.tokenizers.iter().chain(&self.configs) {
            self.dict.learn(v);
        }
        self.dict.add_strings(&[
            "BPE",
            "WordPiece",
            "WordLevel",
            "Unigram",
            "ByteLevel",
            "Metaspace",
            "Sequence",
            "Split",
            "Digits",
            "Whitespace",
            "WhitespaceSplit",
            "BertPreTokenizer",
            "Punctuation",
            "UnicodeScripts",
            "CharDelimiterSplit",
            "FixedLength",
            "TemplateProcessing",
            "BertProcessing",
            "RobertaProcessing",
            "NFC",
            "NFD",
            "NFKC",
            "NFKD",
            "Lowercase",
            "Strip",
            "StripAccents",
            "Prepend",
            "Replace",
            "Nmt",
            "Precompiled",
            "ByteFallback",
            "Fuse",
            "CTC",
            "BPEDecoder",
            "Isolated",
            "Removed",
            "MergedWithPrevious",
            "MergedWithNext",
            "Contiguous",
            "always",
            "never",
            "first",
            "Right",
            "Left",
            "LongestFirst",
            "OnlyFirst",
            "OnlySecond",
            "BatchLongest",
            "$A",
            "$B",
            "$A:1",
            "<s> $A </s>",
            "\\p{L}+",
            "(",
            "[",
            "*",
            "a{99999}",
        ]);
        self.dict.add_keys(&[
            "model",
            "vocab",
            "merges",
            "unk_token",
            "added_tokens",
            "normalizer",
            "pre_tokenizer",
            "post_processor",
            "decoder",
            "truncation",
            "padding",
            "type",
            "byte_fallback",
            "dropout",
            "max_input_chars_per_word",
            "pattern",
            "content",
            "chat_template",
            "eos_token",
            "bos_token",
            "eos_token_id",
        ]);
    }

    fn seed_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let configs = tokenizer_config_seeds();
        for (i, (name, v)) in tokenizer_json_seeds().into_iter().enumerate() {
            let text = serde_json::to_string_pretty(&v).expect("seed") + "\n";
            out.push((
                format!("tokenizer/{name}/tokenizer.json"),
                text.into_bytes(),
            ));
            let cfg =
                serde_json::to_string_pretty(&configs[i % configs.len()]).expect("seed") + "\n";
            out.push((
                format!("tokenizer/{name}/tokenizer_config.json"),
                cfg.into_bytes(),
            ));
        }
        out
    }

    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        if self.pool.len() > 0 && rng.one_in(4) {
            // A kept input with one of its files mutated again.
            let kept: &Vec<u8> = rng.pick(&self.pool);
            let mut files = unpack(kept).unwrap_or_default();
            if !files.is_empty() {
                let i = rng.below(files.len());
                let data = &mut files[i].1;
                match serde_json::from_slice::<Value>(data) {
                    Ok(v) if rng.one_in(2) => *data = json_input(&v, rng, &self.dict, &[]),
                    _ => mutate_bytes(data, rng, &[], JSON_TOKENS),
                }
                return pack(&files);
            }
        }
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let tok = rng.pick(&self.tokenizers).clone();
        let tok_bytes = if rng.one_in(6) {
            serde_json::to_vec(&tok).expect("json")
        } else {
            json_input(&tok, rng, &self.dict, &[])
        };
        if !rng.one_in(40) {
            files.push(("tokenizer.json".into(), tok_bytes));
        }
        if !rng.one_in(5) {
            let cfg = rng.pick(&self.configs).clone();
            let b = if rng.one_in(3) {
                serde_json::to_vec(&cfg).expect("json")
            } else {
                json_input(&cfg, rng, &self.dict, &[])
            };
            files.push(("tokenizer_config.json".into(), b));
        }
        if rng.one_in(12) {
            let mut t = CHATML.as_bytes().to_vec();
            if rng.one_in(2) {
                mutate_bytes(&mut t, rng, &[], TEMPLATE_TOKENS);
            }
            files.push(("chat_template.jinja".into(), t));
        }
        if rng.one_in(12) {
            let v = json!({"chat_template": CHATML});
            files.push((
                "chat_template.json".into(),
                json_input(&v, rng, &self.dict, &[]),
            ));
        }
        if rng.one_in(6) {
            let v = json!({"model_type": "llama", "eos_token_id": [1, 2]});
            files.push(("config.json".into(), json_input(&v, rng, &self.dict, &[])));
            if rng.one_in(2) {
                let v = json!({"bos_token_id": 1, "eos_token_id": 2});
                files.push((
                    "generation_config.json".into(),
                    json_input(&v, rng, &self.dict, &[]),
                ));
            }
        }
        pack(&files)
    }

    fn run(&mut self, input: &[u8]) -> String {
        let Some(files) = unpack(input) else {
            return "not a packed input".into();
        };
        for name in TOKENIZER_FILES {
            match file(&files, name) {
                Some(data) => {
                    std::fs::write(self.dir.join(name), data).expect("write scratch file");
                    self.present.insert(name.to_string());
                }
                None => {
                    if self.present.remove(*name) {
                        let _ = std::fs::remove_file(self.dir.join(name));
                    }
                }
            }
        }
        let tok = match Tokenizer::from_dir(&self.dir) {
            Ok(tok) => tok,
            Err(e) => return outcome(&e.to_string()),
        };
        self.stats.bump("loaded");
        exercise_tokenizer(&tok);
        format!("ok {}", tok.has_chat_template())
    }

    fn details(&self) -> String {
        self.stats.show()
    }

    fn keep(&mut self, input: &[u8]) {
        if self.pool.len() < 2000 && input.len() <= MAX_KEPT {
            self.pool.push(input.to_vec());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Chat templates
// ---------------------------------------------------------------------------------------------

/// Jinja snippets the template mutations insert: constructs real templates use, and ones that
/// try the limits (long loops, large strings, recursion, odd formats).
const TEMPLATE_TOKENS: &[&[u8]] = &[
    b"{{ bos_token }}",
    b"{{ eos_token }}",
    b"{% for message in messages %}",
    b"{% endfor %}",
    b"{% if add_generation_prompt %}",
    b"{% endif %}",
    b"{% else %}",
    b"{{ message['content'] }}",
    b"{{ message.content | trim }}",
    b"{{ messages | tojson }}",
    b"{{ tools | tojson(indent=4) }}",
    b"{{ messages | tojson(indent=99999999999) }}",
    b"{{ messages | tojson(indent='\t') }}",
    b"{{ raise_exception('boom') }}",
    b"{{ strftime_now('%Y-%m-%d') }}",
    b"{{ strftime_now('%Q %') }}",
    b"{{ strftime_now('%999999999Y') }}",
    b"{% set ns = namespace(x=0, s='ab') %}",
    b"{% set ns.x = ns.x + 1 %}",
    b"{% for i in range(100000) %}",
    b"{% for i in range(99999999999) %}",
    b"{% break %}",
    b"{% continue %}",
    b"{{ 'a' * 99999999 }}",
    b"{{ 'ab' * 50000000 }}",
    b"{{ [1, 2] * 99999999 }}",
    b"{{ 'x' | indent(99999999999) }}",
    b"{{ 'x\ny' | indent(width=4000000000, first=true) }}",
    b"{{ '%999999999999d' | format(1) }}",
    b"{{ '%-2000000000s' | format('x') }}",
    b"{{ '{:>999999999999}'.format(1) }}",
    b"{{ 'x'.center(99999999999) }}",
    b"{{ 'x'.ljust(99999999999) }}",
    b"{{ 'x'.zfill(99999999999) }}",
    b"{{ '%s' % messages }}",
    b"{{ 10 ** 100 }}",
    b"{{ 2 ** 99999 }}",
    b"{{ 1 / 0 }}",
    b"{{ 1 // 0 }}",
    b"{{ 1 % 0 }}",
    b"{{ messages[::-1] }}",
    b"{{ messages[-99999999999] }}",
    b"{{ message.content.split(' ') | join(',') }}",
    b"{{ message.content.strip().upper() }}",
    b"{{ message.content.replace('', 'xx') }}",
    b"{{ message.content * 1000 }}",
    b"{% macro m(x) %}{{ m(x) }}{% endmacro %}{{ m(1) }}",
    b"{% macro f() %}{{ caller() }}{% endmacro %}{% call f() %}x{% endcall %}",
    b"{{ (messages | first).role }}",
    b"{{ messages | map(attribute='role') | join(',') }}",
    b"{{ messages | selectattr('role', 'equalto', 'user') | list | length }}",
    b"{{ range(10) | batch(0) | list }}",
    b"{{ range(10) | slice(0) | list }}",
    b"{{ 'abc' | truncate(0) }}",
    b"{{ x | wordwrap(0) }}",
    b"{{ 'a b' | wordcount }}",
    b"{{ {'a': 1} | dictsort }}",
    b"{{ messages | groupby('role') }}",
    b"{{ 'x' ~ 1 }}",
    b"{% set ns.s = ns.s ~ ns.s %}",
    b"{% set x = [] %}{% for i in range(100) %}{% set x = x + x + [i] %}{% endfor %}",
    b"{% filter upper %}x{% endfilter %}",
    b"{% raw %}{{ x }}{% endraw %}",
    b"{%- if tools %}",
    b"{{- '\\n' }}",
    b"{% with a = 1 %}{{ a }}{% endwith %}",
    b"{% include 'chat' %}",
    b"{% extends 'chat' %}",
    b"{% import 'chat' as c %}",
    b"{% autoescape true %}<{% endautoescape %}",
    b"{{ self }}",
    b"{{ loop.cycle(1, 2) }}",
    b"{{ debug() }}",
    b"{{ namespace() }}",
    b"{{ dict(a=1).items() | list }}",
    b"{{ 'a' is string }}",
    b"{{ none is none }}",
    b"{{ x is defined }}",
    b"{# comment #}",
    b"{{",
    b"}}",
    b"{%",
    b"%}",
    b"{#",
    b"'",
    b"\"",
    b"(",
    b")",
    b"|",
    b".",
    b"[",
    b"]",
];

const TEMPLATE_SEEDS: &[&str] = &[
    CHATML,
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}",
    r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are Qwen.' }}{%- endif %}
    {{- "\n\n# Tools\n<tools>" }}
    {%- for tool in tools %}{{- "\n" }}{{- tool | tojson }}{%- endfor %}
    {{- "\n</tools><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}{%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}{{- '\n' + message.content }}{%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}{{- tool_call.arguments | tojson }}{{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}{{- '<|im_start|>user' }}{%- endif %}
        {{- '\n<tool_response>\n' }}{{- message.content }}{{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}{{- '<|im_end|>\n' }}{%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
"#,
    r#"{%- set ns = namespace(count=0, sys='') -%}
{%- for m in messages -%}{%- if m.role == 'system' -%}{%- set ns.sys = m.content -%}{%- else -%}{%- set ns.count = ns.count + 1 -%}{%- endif -%}{%- endfor -%}
SYS={{ ns.sys }};N={{ ns.count }};ROLES={{ messages | map(attribute='role') | join(',') }};
{%- for m in messages[::-1] %}[{{ loop.index }}/{{ loop.length }}:{{ m.content.replace(' ', '_').lstrip('_') | upper }}:{{ m.content.endswith('?') }}]{% endfor %}
{{ tools | tojson(indent=4) }}
{%- for k, v in tools[0].items() %}{{ k }}{% if v is mapping %}=map{% elif v is string %}=str{% endif %};{% endfor %}
{{ (messages | first).role }}/{{ (messages | last).content | length }}/{{ messages[0].content.split(' ') | last }}/{{ 3 // 2 }}/{{ 7 % 3 }}/{{ 'a' ~ 1 }}/{{ [1, 2] + [3] }}/{{ 'x' in 'xyz' }}/{{ none is none }}
{% if add_generation_prompt %}GEN{% endif %}"#,
    "{{- bos_token }}\n{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}\n{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}\n{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}{{- 'Today Date: ' + date_string + '\\n\\n' }}\n{%- for t in tools %}{{- t | tojson(indent=4) }}{{- '\\n\\n' }}{%- endfor %}\n{%- for message in messages %}{%- if message.tool_calls is defined %}{%- for tc in message.tool_calls %}{{- '{\"name\": \"' + tc.function.name + '\", \"parameters\": ' }}{{- tc.function.arguments | tojson }}{{- '}' }}{%- endfor %}{%- else %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}{%- endif %}{%- endfor %}\n{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}",
    "{% for message in messages %}{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% elif part['type'] == 'image' %}<image>{% endif %}{% endfor %}{% endif %}{% endfor %}{% if enable_thinking is defined and enable_thinking %}<think>{% endif %}",
];

fn messages_seeds() -> Vec<Value> {
    vec![
        json!([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi!"},
               {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}]),
        json!([{"role": "user", "content": "What is the weather?"},
               {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
                   "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}}]},
               {"role": "tool", "content": "{\"temp\": 21.5}"}, {"role": "assistant", "content": "21.5 C"}]),
        json!([{"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image"}]}]),
        json!([]),
        json!([{"role": "user", "content": "é世🎉\u{0}"}]),
    ]
}

fn tools_seed() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
            "days": {"type": "integer", "minimum": 1}}, "required": ["city"]}}}])
}

/// Template constructs that make minijinja (2.24) run or allocate without bound, in code this
/// project cannot change (an upstream bug; the inputs are counted and skipped so that the run
/// goes on finding others): a sequence repeated a huge number of
/// times (`[1, 2] * 99999999`) is lazy and has no size limit (unlike a repeated string), and
/// printing it iterates every item without fuel, after the output limit has stopped writing
/// (17 s for that one, unbounded for larger counts); `| list` or `| join` of it allocate
/// gigabytes.
fn known_template_issue(source: &str) -> Option<&'static str> {
    let b = source.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c != b'*' || b.get(i + 1) == Some(&b'*') || (i > 0 && b[i - 1] == b'*') {
            continue;
        }
        let before = source[..i].trim_end();
        let after = source[i + 1..].trim_start();
        let seq_before = before.ends_with(']') || before.ends_with(')');
        let seq_after = after.starts_with('[');
        let num_after = after.bytes().take_while(u8::is_ascii_digit).count() >= 6;
        let num_before = before.bytes().rev().take_while(u8::is_ascii_digit).count() >= 6;
        if (seq_before && num_after) || (seq_after && num_before) {
            return Some("a sequence repeated without a size limit (minijinja's `seq * n`)");
        }
    }
    None
}

struct ChatTemplateTarget {
    templates: Vec<Vec<u8>>,
    messages: Vec<Value>,
    dict: Dict,
    base: tokenizers::Tokenizer,
    pool: Vec<Vec<u8>>,
    stats: Stats,
}

impl ChatTemplateTarget {
    fn new() -> Self {
        let (_, spec) = tokenizer_json_seeds().swap_remove(0);
        let base = tokenizers::Tokenizer::from_bytes(spec.to_string().as_bytes())
            .expect("the byte-level seed loads");
        ChatTemplateTarget {
            templates: Vec::new(),
            messages: Vec::new(),
            dict: Dict::default(),
            base,
            pool: Vec::new(),
            stats: Stats::default(),
        }
    }
}

impl Target for ChatTemplateTarget {
    fn seed(&mut self, corpus: &Path) {
        self.templates = TEMPLATE_SEEDS
            .iter()
            .map(|t| t.as_bytes().to_vec())
            .collect();
        for p in files_in(&corpus.join("chat-template"), ".jinja") {
            if let Ok(b) = std::fs::read(&p) {
                self.templates.push(b);
            }
        }
        self.messages = messages_seeds();
        for p in files_in(&corpus.join("chat-template"), ".json") {
            if let Some(v) = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                self.messages.push(v);
            }
        }
        for m in &self.messages {
            self.dict.learn(m);
        }
        self.dict.learn(&tools_seed());
        self.dict.add_strings(&[
            "system",
            "user",
            "assistant",
            "tool",
            "text",
            "image",
            "function",
        ]);
    }

    fn seed_files(&self) -> Vec<(String, Vec<u8>)> {
        let names = [
            "chatml",
            "llama3",
            "mistral",
            "gemma",
            "qwen25-tools",
            "features",
            "llama31-tools",
            "multipart",
        ];
        let mut out: Vec<(String, Vec<u8>)> = TEMPLATE_SEEDS
            .iter()
            .zip(names)
            .map(|(t, n)| (format!("chat-template/{n}.jinja"), t.as_bytes().to_vec()))
            .collect();
        for (i, m) in messages_seeds().iter().enumerate() {
            let text = serde_json::to_string_pretty(m).expect("seed") + "\n";
            out.push((
                format!("chat-template/messages-{i}.json"),
                text.into_bytes(),
            ));
        }
        out
    }

    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        let mut template = if !self.pool.is_empty() && rng.one_in(4) {
            let kept: &Vec<u8> = rng.pick(&self.pool);
            unpack(kept)
                .and_then(|f| file(&f, "template").map(<[u8]>::to_vec))
                .unwrap_or_default()
        } else {
            rng.pick(&self.templates).clone()
        };
        if !rng.one_in(6) {
            let pool = self.templates.clone();
            for _ in 0..rng.range(1, 3) {
                if rng.one_in(2) {
                    // A snippet at a random place (at a tag boundary more often than not).
                    let snippet = rng.pick(TEMPLATE_TOKENS);
                    let bounds: Vec<usize> = template
                        .windows(2)
                        .enumerate()
                        .filter(|(_, w)| w == b"%}" || w == b"}}")
                        .map(|(i, _)| i + 2)
                        .collect();
                    let at = if !bounds.is_empty() && rng.below(3) > 0 {
                        *rng.pick(&bounds)
                    } else {
                        rng.below(template.len() + 1)
                    };
                    template.splice(at..at, snippet.iter().copied());
                } else {
                    mutate_bytes(&mut template, rng, &pool, TEMPLATE_TOKENS);
                }
            }
        }
        let messages = rng.pick(&self.messages).clone();
        let messages = if rng.one_in(3) {
            serde_json::to_vec(&messages).expect("json")
        } else {
            json_input(&messages, rng, &self.dict, &[])
        };
        let mut files = vec![
            ("template".to_string(), template),
            ("messages".to_string(), messages),
        ];
        if rng.one_in(3) {
            files.push((
                "tools".into(),
                json_input(&tools_seed(), rng, &self.dict, &[]),
            ));
        }
        if rng.one_in(4) {
            let extra = json!({"enable_thinking": false, "date_string": "1 Jan 2025", "custom": [1, {"a": null}]});
            files.push(("extra".into(), json_input(&extra, rng, &self.dict, &[])));
        }
        if rng.one_in(5) {
            let t: &Vec<u8> = rng.pick(&self.templates);
            let t = String::from_utf8_lossy(t).into_owned();
            let v = json!([{"name": "default", "template": t}, {"name": "tool_use", "template": "{{ tools }}"}]);
            files.push(("select".into(), json_input(&v, rng, &self.dict, &[])));
        }
        let flags = rng.next() as u8;
        files.push(("flags".into(), vec![flags]));
        pack(&files)
    }

    fn run(&mut self, input: &[u8]) -> String {
        let Some(files) = unpack(input) else {
            return "not a packed input".into();
        };
        let flags = file(&files, "flags")
            .and_then(|f| f.first().copied())
            .unwrap_or(0);
        if let Some(sel) =
            file(&files, "select").and_then(|b| serde_json::from_slice::<Value>(b).ok())
        {
            let name =
                [None, Some("default"), Some("tool_use"), Some("")][(flags >> 4) as usize % 4];
            let _ = ChatTemplate::select(&sel, name).map_err(|e| e.to_string());
        }
        // A template file is read as UTF-8 text (`read_to_string`); other bytes are an error.
        let Some(source) = file(&files, "template").and_then(|t| std::str::from_utf8(t).ok())
        else {
            return "not utf-8".into();
        };
        if let Some(issue) = known_template_issue(source) {
            return format!("{KNOWN_ISSUE}{issue}");
        }
        let specials: BTreeMap<String, String> = [
            ("bos_token", "<|im_start|>"),
            ("eos_token", "<|im_end|>"),
            ("pad_token", "<|eot|>"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let tok = match Tokenizer::from_parts(
            self.base.clone(),
            Some(source),
            specials,
            BTreeSet::from([1]),
        ) {
            Ok(t) => t,
            Err(e) => return outcome(&e.to_string()),
        };
        let messages: Value = file(&files, "messages")
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_else(|| json!([]));
        let tools = file(&files, "tools").and_then(|b| serde_json::from_slice(b).ok());
        let extra = file(&files, "extra")
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        let options = ChatOptions {
            add_generation_prompt: flags & 1 != 0,
            tools,
            extra,
            ..ChatOptions::default()
        };
        self.stats.bump("parsed");
        let r = tok.apply_chat_template_json(&messages, &options);
        if r.is_ok() {
            self.stats.bump("rendered");
        }
        if flags & 2 != 0 {
            if let Ok(list) = serde_json::from_value::<Vec<ChatMessage>>(messages) {
                let _ = tok.apply_chat_template(&list, &options);
            }
        }
        match r {
            Ok(text) => format!("ok {}", text.len().min(1).min(1)),
            Err(e) => outcome(&e.to_string()),
        }
    }

    fn details(&self) -> String {
        self.stats.show()
    }

    fn keep(&mut self, input: &[u8]) {
        if self.pool.len() < 2000 && input.len() <= MAX_KEPT {
            self.pool.push(input.to_vec());
        }
    }
}

// =============================================================================================
// The loop
// =============================================================================================

const TARGETS: &[&str] = &[
    "config",
    "safetensors",
    "gguf",
    "tokenizer",
    "chat-template",
];

fn make_target(name: &str) -> Result<Box<dyn Target>, String> {
    Ok(match name {
        "config" => Box::new(ConfigTarget::new()?),
        "safetensors" => Box::new(SafetensorsTarget {
            pool: Vec::new(),
            seeds: 0,
            dict: Dict::default(),
            scratch: scratch_dir("safetensors"),
            count: 0,
            stats: Stats::default(),
        }),
        "gguf" => {
            let archs = ConfigTarget::new()?.archs;
            Box::new(GgufTarget {
                seeds: Vec::new(),
                pool: Vec::new(),
                scratch: scratch_dir("gguf"),
                archs,
                opened: 0,
                stats: Stats::default(),
            })
        }
        "tokenizer" => Box::new(TokenizerTarget {
            tokenizers: Vec::new(),
            configs: Vec::new(),
            pool: Vec::new(),
            dict: Dict::default(),
            dir: scratch_dir("tokenizer"),
            present: BTreeSet::new(),
            stats: Stats::default(),
        }),
        "chat-template" => Box::new(ChatTemplateTarget::new()),
        other => {
            return Err(format!(
                "unknown target `{other}` (targets: {}, all)",
                TARGETS.join(", ")
            ))
        }
    })
}

struct Options {
    iterations: u64,
    seed: u64,
    corpus: PathBuf,
    crash_dir: PathBuf,
    hang_ms: u64,
    /// Stop a target after this many seconds (0: no limit).
    max_seconds: u64,
}

thread_local! {
    static PANIC_MESSAGE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// Whether this thread is running an input (its panics are crashes, reported by the loop).
    static IN_RUN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The summary of one target's run.
struct Summary {
    inputs: u64,
    crashes: u64,
    hangs: u64,
    oversized: u64,
    /// The most one input's run had allocated at once.
    peak: usize,
    /// The peak of the whole process's heap (seeds and pool included).
    process_peak: usize,
    /// The peak of the heap while inputs were made.
    harness_peak: usize,
    /// How far the inputs got.
    details: String,
    largest: usize,
    seconds: f64,
    outcomes: usize,
    slowest: Duration,
}

fn run_target(name: &str, opts: &Options) -> Result<Summary, String> {
    let mut target = make_target(name)?;
    target.seed(&opts.corpus);
    std::fs::create_dir_all(&opts.crash_dir)
        .map_err(|e| format!("cannot create {}: {e}", opts.crash_dir.display()))?;
    let fatal = opts.crash_dir.join(format!("{name}-fatal.bin"));
    FATAL_PATH.store(
        CString::new(fatal.display().to_string())
            .expect("path")
            .into_raw(),
        Ordering::SeqCst,
    );
    TARGET_NAME.store(
        CString::new(name).expect("name").into_raw(),
        Ordering::SeqCst,
    );

    let mut rng = Rng::new(opts.seed ^ hash_str(name));
    let mut seen: HashSet<String> = HashSet::new();
    // Failures by kind: how many, and how many inputs were saved.
    let mut kinds: BTreeMap<String, (u64, u32)> = BTreeMap::new();
    let (mut crashes, mut hangs, mut oversized) = (0u64, 0u64, 0u64);
    let mut slowest = Duration::ZERO;
    let mut slowest_at = 0u64;
    let mut known: BTreeMap<String, u64> = BTreeMap::new();
    // The largest single request of one input, and at which iteration.
    let mut largest = (0usize, 0u64);
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    // What one input's run allocated: the most at once, and the largest single request.
    let mut max_growth = 0usize;
    // The heap's peak while the harness made inputs (pools and seeds included).
    let mut harness_peak = 0usize;
    let started = Instant::now();
    let mut inputs = 0u64;
    for i in 0..opts.iterations {
        if opts.max_seconds > 0 && started.elapsed().as_secs() >= opts.max_seconds {
            break;
        }
        INPUT_PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let input = target.generate(&mut rng);
        harness_peak = harness_peak.max(INPUT_PEAK.load(Ordering::Relaxed));
        CUR_PTR.store(input.as_ptr() as *mut u8, Ordering::SeqCst);
        CUR_LEN.store(input.len(), Ordering::SeqCst);
        CUR_ITER.store(i, Ordering::SeqCst);
        OVERSIZED.store(0, Ordering::SeqCst);
        INPUT_LARGEST.store(0, Ordering::Relaxed);
        let live_before = LIVE.load(Ordering::Relaxed);
        INPUT_PEAK.store(live_before, Ordering::Relaxed);
        let t0 = Instant::now();
        CUR_START_MS.store(now_ms(), Ordering::SeqCst);
        IN_RUN.with(|r| r.set(true));
        let result = panic::catch_unwind(AssertUnwindSafe(|| target.run(&input)));
        IN_RUN.with(|r| r.set(false));
        CUR_START_MS.store(0, Ordering::SeqCst);
        let elapsed = t0.elapsed();
        inputs += 1;
        if elapsed > slowest {
            slowest = elapsed;
            slowest_at = i;
            // The slowest input, kept for a look when it is near the hang limit.
            if elapsed.as_millis() as u64 * 4 > opts.hang_ms {
                let _ = std::fs::write(opts.crash_dir.join(format!("{name}-slowest.bin")), &input);
            }
        }
        let big = OVERSIZED.load(Ordering::SeqCst);
        let growth = INPUT_PEAK
            .load(Ordering::Relaxed)
            .saturating_sub(live_before);
        let request = INPUT_LARGEST.load(Ordering::Relaxed);
        max_growth = max_growth.max(growth);
        if request > largest.0 {
            largest = (request, i);
            // The input behind a large allocation, kept for a look (not a failure).
            if request > NOTABLE_ALLOC {
                let path = opts.crash_dir.join(format!("{name}-largest.bin"));
                let _ = std::fs::write(path, &input);
            }
        }

        let mut failure: Option<(String, String)> = None;
        match &result {
            Err(_) => {
                crashes += 1;
                let msg = PANIC_MESSAGE
                    .with(|m| m.borrow_mut().take())
                    .unwrap_or_else(|| "a panic".into());
                failure = Some((
                    format!("panic {}", outcome(msg.lines().next().unwrap_or(""))),
                    msg,
                ));
            }
            Ok(_) if big > 0 || growth > ALLOC_CAP => {
                oversized += 1;
                crashes += 1;
                failure = Some((
                    "allocation over 1 GiB".into(),
                    format!("a single request of {big} bytes, the heap grew by {growth} bytes"),
                ));
            }
            Ok(_) if elapsed.as_millis() as u64 > opts.hang_ms => {
                hangs += 1;
                failure = Some((
                    "hang".into(),
                    format!("{} ms (limit {} ms)", elapsed.as_millis(), opts.hang_ms),
                ));
            }
            Ok(o) if o.starts_with(KNOWN_ISSUE) => *known.entry(o.clone()).or_default() += 1,
            Ok(o) => {
                if seen.len() < 100_000 && seen.insert(o.clone()) {
                    target.keep(&input);
                }
            }
        }
        if let Some((kind, detail)) = failure {
            let entry = kinds.entry(kind.clone()).or_insert((0, 0));
            entry.0 += 1;
            if entry.1 < 3 {
                entry.1 += 1;
                let path = opts.crash_dir.join(format!("{name}-{i}.bin"));
                let _ = std::fs::write(&path, &input);
                eprintln!(
                    "fuzz {name}: {kind} at iteration {i}: {detail}\n  input saved to {} (replay: fuzz {name} --replay {})",
                    path.display(),
                    path.display()
                );
            }
        }
        // The watchdog may be reading this input: wait for it before freeing.
        drop(INPUT_LOCK.lock().unwrap_or_else(|e| e.into_inner()));
        CUR_PTR.store(std::ptr::null_mut(), Ordering::SeqCst);
        drop(input);
    }
    let seconds = started.elapsed().as_secs_f64();
    for (kind, (n, _)) in &kinds {
        eprintln!("fuzz {name}: {n} x {kind}");
    }
    if largest.0 > NOTABLE_ALLOC {
        eprintln!(
            "fuzz {name}: the largest allocation, {:.1} MB, was at iteration {} (input saved as {name}-largest.bin)",
            largest.0 as f64 / 1e6,
            largest.1
        );
    }
    if slowest.as_millis() as u64 * 4 > opts.hang_ms {
        eprintln!(
            "fuzz {name}: the slowest input, {} ms, was at iteration {slowest_at} (input saved as {name}-slowest.bin)",
            slowest.as_millis()
        );
    }
    for (issue, n) in &known {
        eprintln!("fuzz {name}: {n} inputs skipped: {issue}");
    }
    Ok(Summary {
        inputs,
        crashes,
        hangs,
        oversized,
        peak: max_growth,
        process_peak: PEAK.load(Ordering::Relaxed),
        harness_peak,
        details: target.details(),
        largest: largest.0,
        seconds,
        outcomes: seen.len(),
        slowest,
    })
}

/// Runs one saved input `repeat` times; with more than one, says how much the live heap grew
/// (a leak shows as growth proportional to the repeats).
fn replay(name: &str, path: &Path, repeat: u64) -> Result<(), String> {
    let mut target = make_target(name)?;
    target.seed(Path::new("/nonexistent"));
    let input = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let t0 = Instant::now();
    OVERSIZED.store(0, Ordering::SeqCst);
    let out = target.run(&input);
    println!(
        "{name}: {out} ({} ms, largest request {} bytes)",
        t0.elapsed().as_millis(),
        LARGEST.load(Ordering::Relaxed)
    );
    if repeat > 1 {
        let before = LIVE.load(Ordering::Relaxed);
        for _ in 1..repeat {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| target.run(&input)));
        }
        let after = LIVE.load(Ordering::Relaxed);
        println!(
            "{name}: {} more runs, live heap {before} -> {after} bytes ({:.1} bytes per run)",
            repeat - 1,
            (after as f64 - before as f64) / (repeat - 1) as f64
        );
    }
    Ok(())
}

fn write_seeds(dir: &Path) -> Result<(), String> {
    for name in TARGETS {
        let target = make_target(name)?;
        for (rel, data) in target.seed_files() {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&path, data).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("{}", path.display());
        }
    }
    Ok(())
}

fn usage() -> String {
    format!(
        "usage: fuzz <{}|all> [--iterations N] [--seed S] [--corpus DIR] [--crash-dir DIR] \
         [--hang-ms MS] [--max-seconds S] [--replay FILE]\n       fuzz write-seeds DIR",
        TARGETS.join("|")
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(first) = args.first() else {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    };
    if first == "write-seeds" {
        let dir = args
            .get(1)
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus"));
        return match write_seeds(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut opts = Options {
        iterations: 10_000,
        seed: 1,
        corpus: Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus"),
        crash_dir: workspace_dir().join("target/fuzz-crashes"),
        hang_ms: 1000,
        max_seconds: 0,
    };
    let mut replay_file = None;
    let mut repeat = 1u64;
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).cloned();
        let Some(value) = value else {
            eprintln!("error: `{}` needs a value\n{}", args[i], usage());
            return ExitCode::from(2);
        };
        let num = |v: &str| v.replace('_', "").parse::<u64>();
        let ok = match args[i].as_str() {
            "--iterations" | "-n" => num(&value).map(|n| opts.iterations = n).is_ok(),
            "--seed" => num(&value).map(|n| opts.seed = n).is_ok(),
            "--hang-ms" => num(&value).map(|n| opts.hang_ms = n).is_ok(),
            "--max-seconds" => num(&value).map(|n| opts.max_seconds = n).is_ok(),
            "--corpus" => {
                opts.corpus = PathBuf::from(&value);
                true
            }
            "--crash-dir" => {
                opts.crash_dir = PathBuf::from(&value);
                true
            }
            "--replay" => {
                replay_file = Some(PathBuf::from(&value));
                true
            }
            "--repeat" => num(&value).map(|n| repeat = n).is_ok(),
            _ => false,
        };
        if !ok {
            eprintln!("error: bad argument `{} {value}`\n{}", args[i], usage());
            return ExitCode::from(2);
        }
        i += 2;
    }
    let names: Vec<&'static str> = if first == "all" {
        TARGETS.to_vec()
    } else if let Some(t) = TARGETS.iter().find(|t| **t == first.as_str()) {
        vec![*t]
    } else {
        eprintln!("error: unknown target `{first}`\n{}", usage());
        return ExitCode::from(2);
    };
    if let Some(path) = replay_file {
        // The default panic hook: a crash shows its message (and backtrace with RUST_BACKTRACE).
        let mut failed = false;
        for name in names {
            if let Err(e) = replay(name, &path, repeat) {
                eprintln!("error: {e}");
                failed = true;
            }
            remove_scratch_dir(name);
        }
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }

    panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if IN_RUN.with(|r| r.get()) {
            PANIC_MESSAGE.with(|m| *m.borrow_mut() = Some(format!("{at}: {msg}")));
        } else {
            eprintln!("fuzz: panic in the harness itself (not in a parser): {at}: {msg}");
        }
    }));
    install_signal_handlers();
    HANG_ABORT_MS.store(opts.hang_ms.max(1000) * 20, Ordering::SeqCst);
    spawn_watchdog();

    // The loop runs on a thread with the main thread's stack size, so that recursion limits
    // are tried as a program's main thread would meet them.
    let worker = std::thread::Builder::new()
        .name("fuzz".into())
        .stack_size(8 << 20)
        .spawn(move || {
            let mut failed = false;
            for name in names {
                match run_target(name, &opts) {
                    Ok(s) => {
                        println!(
                            "fuzz {name}: {} inputs, {} crashes, {} hangs, peak allocation {:.1} MB, {:.1} s",
                            s.inputs,
                            s.crashes,
                            s.hangs,
                            s.peak as f64 / 1e6,
                            s.seconds
                        );
                        println!(
                            "  ({} distinct outcomes, largest single allocation {:.1} MB, {} over 1 GiB, slowest input {} ms, process heap peak {:.1} MB, {:.1} MB while making inputs)",
                            s.outcomes,
                            s.largest as f64 / 1e6,
                            s.oversized,
                            s.slowest.as_millis(),
                            s.process_peak as f64 / 1e6,
                            s.harness_peak as f64 / 1e6
                        );
                        if !s.details.is_empty() {
                            println!("  (inputs: {})", s.details);
                        }
                        failed |= s.crashes > 0 || s.hangs > 0;
                    }
                    Err(e) => {
                        eprintln!("fuzz {name}: error: {e}");
                        failed = true;
                    }
                }
            }
            failed
        })
        .expect("spawn the fuzz thread");
    let failed = worker.join().unwrap_or(true);
    for name in TARGETS {
        remove_scratch_dir(name);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
