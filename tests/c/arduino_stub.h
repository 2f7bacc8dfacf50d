/* A minimal Arduino API so the example sketch compiles on the host in the tests (the sketch
 * is C++, wb_frame.c is C, as the Arduino toolchain builds them). */
#include <stdint.h>
#include <stddef.h>
#define HIGH 1
#define LOW 0
#define OUTPUT 1
#define LED_BUILTIN 13
struct SerialStub { void begin(long) {} int available() { return 0; } int read() { return -1; }
                    size_t write(const uint8_t *, size_t n) { return n; } };
static SerialStub Serial;
static inline void pinMode(int, int) {}
static inline void digitalWrite(int, int) {}
