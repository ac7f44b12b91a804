//! Prints how a fuzz input decodes, and runs it: `cargo run -p gmlake-fuzz --example decode -- FILE`.
fn main() {
    let path = std::env::args().nth(1).expect("usage: decode FILE");
    let data = std::fs::read(&path).expect("readable input");
    let p = gmlake_fuzz::Program::decode(&data);
    println!(
        "{:?} {:?} capacity_units {} ({} ops)",
        p.backend,
        p.preset,
        p.capacity_units,
        p.ops.len()
    );
    for op in &p.ops {
        println!("  {op:?}");
    }
    println!("{:?}", gmlake_fuzz::run_program(&p));
}
