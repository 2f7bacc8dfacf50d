/* A minimal Arduino API so the example sketch compiles and runs on the host in the tests (the
 * sketch is C++, wb_frame.c is C, as the Arduino toolchain builds them): Serial reads the
 * process's standard input and writes its standard output, millis() advances 50 ms a call,
 * analogRead(pin) gives the pin's number. */
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#define HIGH 1
#define LOW 0
#define OUTPUT 1
#define LED_BUILTIN 13
#define A0 14
struct SerialStub {
    int next = -2;  /* -2: not read yet */
    void begin(long) {}
    int available() { if (next == -2) next = getchar(); return next >= 0; }
    int read() { int c = available() ? next : -1; next = -2; return c; }
    size_t write(const uint8_t *p, size_t n) { return fwrite(p, 1, n, stdout); }
};
static SerialStub Serial;
static inline void pinMode(int, int) {}
static inline void digitalWrite(int, int) {}
static inline int analogRead(int pin) { return pin; }
static inline uint32_t millis() { static uint32_t t = 0; return t += 50; }
