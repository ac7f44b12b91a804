//! Shrinks a failing fuzz input by removing operations while it still fails, and prints the
//! smallest program found: `cargo run -p gmlake-fuzz --example minimize -- FILE [sim]`.
fn main() {
    let path = std::env::args().nth(1).expect("usage: minimize FILE [sim]");
    let data = std::fs::read(&path).expect("readable input");
    let mut p = gmlake_fuzz::Program::decode(&data);
    if std::env::args().nth(2).as_deref() == Some("sim") {
        p.backend = gmlake_fuzz::Backend::Simulated;
    }
    let first = gmlake_fuzz::run_program(&p).expect_err("the input must fail");
    let key = first.what.split(':').next().unwrap_or("").to_string();
    println!("fails: {first}");
    loop {
        let mut shrunk = false;
        let mut i = 0;
        while i < p.ops.len() {
            let mut q = p.clone();
            q.ops.remove(i);
            match gmlake_fuzz::run_program(&q) {
                Err(v) if v.what.starts_with(&key) => {
                    p = q;
                    shrunk = true;
                }
                _ => i += 1,
            }
        }
        if !shrunk {
            break;
        }
    }
    println!(
        "{:?} {:?} capacity_units {}",
        p.backend, p.preset, p.capacity_units
    );
    for op in &p.ops {
        println!("  {op:?}");
    }
    println!("{}", gmlake_fuzz::run_program(&p).unwrap_err());
}
