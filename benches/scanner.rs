//! Scanner throughput (DESIGN §9 budget: ≥ 500 MB/s per core on mixed prose with the
//! default detectors): `Matcher::find` over a ~1 MiB generated corpus of prose with sparse
//! PII, and the `StreamScanner` fed 64-byte chunks (128-byte hold-back, as the rules engine
//! uses by default).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use jimini::scan::{builtin_specs, BuiltinRewriter, Matcher, StreamScanner};

/// Deterministic mixed corpus: English-ish prose with numbers, versions, times, some
/// multi-byte words, and one PII/secret value about every 400 words.
fn corpus(target: usize) -> String {
    let words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dog",
        "and",
        "then",
        "some",
        "model",
        "prompt",
        "response",
        "please",
        "summarize",
        "following",
        "document",
        "about",
        "quarterly",
        "revenue",
        "growth",
        "in",
        "2024",
        "was",
        "12.5%",
        "version",
        "1.2.3",
        "at",
        "10:30",
        "meeting",
        "with",
        "customer",
        "support",
        "team,",
        "which",
        "is",
        "great.",
        "Paris",
        "London",
        "München",
        "naïve",
        "café",
        "漢字",
        "🎉",
        "API",
        "JSON",
        "HTTP/1.1",
    ];
    let pii = [
        "john.doe@example.com",
        "+1 (415) 555-2671",
        "4111 1111 1111 1111",
        "123-45-6789",
        "DE89 3704 0044 0532 0130 00",
        "192.168.1.20",
        "2001:db8::8a2e:370:7334",
        "sk-proj-abcDEF1234567890ghijKLMNOP",
        "AKIAIOSFODNN7EXAMPLE",
        "https://admin:hunter2@db.example.com",
    ];
    let mut s = String::with_capacity(target + 64);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut n = 0usize;
    while s.len() < target {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        n += 1;
        if n.is_multiple_of(400) {
            s.push_str(pii[(x as usize / 7) % pii.len()]);
        } else {
            s.push_str(words[(x as usize) % words.len()]);
        }
        s.push(if n.is_multiple_of(17) { '\n' } else { ' ' });
    }
    s
}

fn chunks(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::with_capacity(text.len() / size + 1);
    let mut i = 0;
    while i < text.len() {
        let mut j = (i + size).min(text.len());
        while !text.is_char_boundary(j) {
            j += 1;
        }
        out.push(&text[i..j]);
        i = j;
    }
    out
}

fn bench_scanner(c: &mut Criterion) {
    let text = corpus(1 << 20);
    let matcher = Matcher::builtin().expect("built-in detectors compile");
    let capped = Matcher::new_with_cap(&builtin_specs(), 128).expect("compile");
    let pieces = chunks(&text, 64);

    let mut g = c.benchmark_group("scanner");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.sample_size(20);
    g.bench_function("find_builtin_1MiB", |b| {
        b.iter(|| black_box(matcher.find(black_box(&text))).len())
    });
    g.bench_function("stream_64B_chunks_hold128", |b| {
        b.iter(|| {
            let mut rw = BuiltinRewriter::new(&capped);
            let mut s = StreamScanner::new();
            let mut out = 0;
            for p in &pieces {
                out += s.push(&mut rw, p).len();
            }
            out + s.finish(&mut rw).len()
        })
    });
    // All shipped packs (pii, secrets, prompt-injection, egress) compiled into one rule set,
    // evaluated as a request would be: one matcher pass plus per-finding actions and rewriting.
    let opts = jimini::rules::RulesOptions {
        global_shadow: false,
        hash_key: b"bench".to_vec(),
        max_holdback: 128,
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let rules = std::sync::Arc::new(
        jimini::rules::RuleSet::load_dir(&dir, &opts).expect("shipped packs compile"),
    );
    g.bench_function("shipped_packs_request_1MiB", |b| {
        b.iter(|| {
            let mut ev = jimini::rules::Evaluator::new(
                rules.clone(),
                jimini::rules::Scope {
                    model: Some("gpt-4o".into()),
                    route: "chat".into(),
                    caller: None,
                },
            );
            ev.rewrite_text(jimini::rules::Direction::Request, black_box(&text))
                .map(|s| s.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_scanner);
criterion_main!(benches);
