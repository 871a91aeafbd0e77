/* std::ios_base_library_init() (GCC 13's libstdc++, GLIBCXX_3.4.32) only guarantees that the
   standard streams are constructed; older libstdc++ constructs them eagerly, so an empty body is
   the faithful replacement. Loaded RTLD_GLOBAL before libLibTorchSharp.so. */
__attribute__((visibility("default"))) void _ZSt21ios_base_library_initv(void) {}
