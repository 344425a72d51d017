#include <cstdio>

int main() { std::puts("spense"); }
