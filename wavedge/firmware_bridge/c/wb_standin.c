/* wb_standin: a stand-in microcontroller for tests and demos, built on wb_frame.
 *
 *   wb_standin PATH|-f FD [BOOT_ID] [-s SAMPLES_FILE [-r HZ]]
 *
 * Talks the bridge protocol on a serial device (or an inherited file descriptor, e.g. the
 * master side of a pseudo-terminal): answers HELLO with its own HELLO (schema hash, max
 * payload, boot id), acknowledges every COMMAND, and prints one line per RESULT it decodes:
 *   RESULT seq=<seq> stream=<s> step=<n> class=<c> score=<f> vector=<n floats>
 *   PREDICTION seq=<seq> stream=<s> step=<n> kind=<k> index=<i> score=<f> values=<n> ...
 * With -s it is also the sensor: once the host's HELLO is answered it sends each line of
 * SAMPLES_FILE (numbers separated by commas or spaces; a line that is not, a header, is
 * skipped) as one SENSOR frame, HZ lines a second (100), reading the host's frames between
 * them, and prints "SENT <n> samples" after the last. On hang-up or end of input it prints
 * its decoder statistics and exits 0.
 */
#define _DEFAULT_SOURCE /* cfmakeraw */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "wb_frame.h"

static int send_frame(int fd, uint8_t type, uint16_t seq, const uint8_t *payload, size_t len)
{
    uint8_t wire[WB_FRAME_WIRE_MAX(WB_MAX_PAYLOAD)];
    size_t n = wb_frame_encode(type, 0u, seq, payload, len, wire, sizeof(wire)), off = 0u;
    while (off < n) {
        ssize_t w = write(fd, wire + off, n - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        off += (size_t)w;
    }
    return 0;
}

/* The sensor side (-s): the samples file, sent a line at a time once the host is heard. */
typedef struct {
    FILE *file;
    int64_t period_ns;  /* between two SENSOR frames */
    int started;     /* the host's HELLO answered: it is listening */
    uint32_t sent;
    struct timespec due;
} sensor_t;

static int64_t ns_until(const struct timespec *due)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(due->tv_sec - now.tv_sec) * 1000000000 + (due->tv_nsec - now.tv_nsec);
}

/* The next line of numbers, as floats; 0 at the end of the file. */
static uint8_t next_sample(FILE *file, float *values, uint8_t most)
{
    char line[1024];
    while (fgets(line, sizeof(line), file) != NULL) {
        char *p = line, *end;
        unsigned n = 0u;
        for (;;) {
            float v = strtof(p, &end);
            if (end == p) break;
            if (n < most) values[n] = v;
            n++;
            p = end + strspn(end, ", \t");
        }
        if (n > 0u && n <= most && strspn(p, "\r\n") == strlen(p)) return (uint8_t)n;
    }
    return 0u;
}

/* Send the next sample if it is due; returns the milliseconds until the one after (-1: done). */
static int sensor_tick(int fd, sensor_t *s, uint16_t *seq)
{
    uint8_t out[WB_MAX_PAYLOAD];
    float values[WB_MAX_VECTOR];
    uint8_t channels;
    int64_t left;
    if (s->file == NULL || !s->started) return -1;
    left = ns_until(&s->due);
    if (left > 0) return (int)(left / 1000000) + 1;
    channels = next_sample(s->file, values, (uint8_t)WB_MAX_VECTOR);
    if (channels == 0u) {
        fclose(s->file);
        s->file = NULL;
        printf("SENT %lu samples\n", (unsigned long)s->sent);
        fflush(stdout);
        return -1;
    }
    (void)send_frame(fd, WB_SENSOR, (*seq)++, out,
                     wb_sensor_pack(0u, s->sent++, channels, 1u, values, out, sizeof(out)));
    s->due.tv_sec += (time_t)(s->period_ns / 1000000000);
    s->due.tv_nsec += (long)(s->period_ns % 1000000000);
    s->due.tv_sec += s->due.tv_nsec / 1000000000L;
    s->due.tv_nsec %= 1000000000L;
    return 0;
}

static void handle(int fd, const wb_frame_t *f, uint32_t boot_id, uint16_t *seq, sensor_t *s)
{
    uint8_t out[WB_MAX_PAYLOAD];
    size_t n;
    if (f->type == WB_HELLO) {
        wb_hello_t mine = {(uint8_t)WB_PROTOCOL_VERSION, WB_SCHEMA_HASH,
                           (uint16_t)WB_MAX_PAYLOAD, boot_id};
        n = wb_hello_pack(&mine, out, sizeof(out));
        (void)send_frame(fd, WB_HELLO, (*seq)++, out, n);
        printf("HELLO from host seq=%u\n", f->seq);
        if (!s->started) {
            s->started = 1;
            clock_gettime(CLOCK_MONOTONIC, &s->due);
        }
    } else if (f->type == WB_COMMAND) {
        n = wb_ack_pack(f->seq, 0u, out, sizeof(out));
        (void)send_frame(fd, WB_ACK, (*seq)++, out, n);
        printf("COMMAND seq=%u acknowledged\n", f->seq);
    } else if (f->type == WB_RESULT) {
        wb_result_t r;
        if (wb_result_unpack(f->payload, f->payload_len, &r)) {
            printf("RESULT seq=%u stream=%u step=%lu class=%u score=%.4f vector=%u\n", f->seq,
                   r.stream_id, (unsigned long)r.step, r.class_id, (double)r.score,
                   r.vector_len);
        } else {
            printf("RESULT seq=%u malformed payload of %u bytes\n", f->seq, f->payload_len);
        }
    } else if (f->type == WB_PREDICTION) {
        wb_prediction_t p;
        if (wb_prediction_unpack(f->payload, f->payload_len, &p)) {
            /* the last value: a class-with-variance frame's last class's variance */
            printf("PREDICTION seq=%u stream=%u step=%lu kind=%u index=%lu score=%.4f "
                   "values=%u first=%.6g last=%.6g\n", f->seq, p.stream_id,
                   (unsigned long)p.step, p.kind, (unsigned long)p.index, (double)p.score,
                   p.n_values, p.n_values ? (double)p.values[0] : 0.0,
                   p.n_values ? (double)p.values[p.n_values - 1] : 0.0);
        } else {
            printf("PREDICTION seq=%u malformed payload of %u bytes\n", f->seq,
                   f->payload_len);
        }
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static wb_decoder_t dec;
    uint8_t buf[256];
    uint16_t seq = 0u;
    uint32_t boot_id = 1u;
    sensor_t sensor = {NULL, 10000000, 0, 0u, {0, 0}};
    int fd, i, rest;
    if (argc >= 3 && strcmp(argv[1], "-f") == 0) {
        fd = atoi(argv[2]);
        rest = 3;
    } else if (argc >= 2 && argv[1][0] != '-') {
        struct termios tio;
        fd = open(argv[1], O_RDWR | O_NOCTTY);
        if (fd < 0) {
            fprintf(stderr, "wb_standin: cannot open %s: %s\n", argv[1], strerror(errno));
            return 1;
        }
        if (tcgetattr(fd, &tio) == 0) {
            cfmakeraw(&tio);
            (void)tcsetattr(fd, TCSANOW, &tio);
        }
        rest = 2;
    } else {
        fprintf(stderr, "usage: wb_standin PATH|-f FD [BOOT_ID] [-s SAMPLES_FILE [-r HZ]]\n");
        return 2;
    }
    for (i = rest; i < argc; i++) {
        if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
            sensor.file = fopen(argv[++i], "r");
            if (sensor.file == NULL) {
                fprintf(stderr, "wb_standin: cannot open %s: %s\n", argv[i], strerror(errno));
                return 1;
            }
        } else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc && atof(argv[i + 1]) > 0.0) {
            sensor.period_ns = (int64_t)(1e9 / atof(argv[++i]));
        } else if (i == rest && argv[i][0] != '-') {
            boot_id = (uint32_t)strtoul(argv[i], NULL, 0);
        } else {
            fprintf(stderr, "wb_standin: unexpected argument %s\n", argv[i]);
            return 2;
        }
    }
    printf("READY boot_id=%lu\n", (unsigned long)boot_id);
    fflush(stdout);
    wb_decoder_init(&dec);
    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int wait_ms = sensor_tick(fd, &sensor, &seq);
        ssize_t n, k;
        if (wait_ms == 0) continue; /* a sample went: the next may be due already */
        if (poll(&pfd, 1, wait_ms) == 0) continue;
        n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* hang-up (EIO on a pty) or end of input */
        for (k = 0; k < n; k++) {
            if (wb_decoder_feed(&dec, buf[k]) == WB_FRAME_READY) {
                handle(fd, &dec.frame, boot_id, &seq, &sensor);
            }
        }
    }
    if (sensor.file != NULL) fclose(sensor.file);
    printf("STATS frames=%lu crc=%lu cobs=%lu length=%lu version=%lu overflows=%lu skipped=%lu\n",
           (unsigned long)dec.stats.frames, (unsigned long)dec.stats.crc_errors,
           (unsigned long)dec.stats.cobs_errors, (unsigned long)dec.stats.length_errors,
           (unsigned long)dec.stats.version_errors, (unsigned long)dec.stats.overflows,
           (unsigned long)dec.stats.bytes_skipped);
    return 0;
}
