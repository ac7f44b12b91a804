//! Generates and compiles the C++ side of the cxx bridge (src/lib.rs).
fn main() {
    cxx_build::bridge("src/lib.rs")
        .std("c++17")
        .compile("gmlake-cpp-bridge");
    println!("cargo:rerun-if-changed=src/lib.rs");
}
