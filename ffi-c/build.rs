//! Builds the C++ shim that throws PyTorch's out-of-memory exception (src/torch_shim.cpp).
fn main() {
    println!("cargo:rerun-if-changed=src/torch_shim.cpp");
    cc::Build::new()
        .cpp(true)
        .file("src/torch_shim.cpp")
        .flag_if_supported("-std=c++17")
        .compile("gmlake_torch_shim");
}
